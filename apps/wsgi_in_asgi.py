"""A WSGI app called from ASGI, so it can sit behind the prefix router beside ASGI apps.

``tiercel APP`` runs a WSGI app natively (core/wsgi.py drives the engine's stream from worker
threads). Behind the prefix router there is no stream, only the router's ASGI ``receive`` and
``send``, so this bridge runs the app in a worker thread (anyio's) and hops back to the event
loop for every ``receive``/``send``: the request body is read as the app reads ``wsgi.input``
and each response block is sent as the app yields it, so neither is held whole in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from tiercel.adapters.threads_adapter import worker_threads
from tiercel.core.stream import ClientDisconnected
from tiercel.core.wsgi import (
    BodyInput,
    FileWrapper,
    WsgiErrors,
    add_header_variables,
    parse_headers,
    parse_status,
    wsgi_string,
)

log = logging.getLogger("tiercel.error")

Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]


class _BodyReader(BodyInput):
    """``wsgi.input``: pulls ``http.request`` messages from the loop as the app reads."""

    def __init__(self, receive: Receive) -> None:
        super().__init__()
        self._receive = receive

    def _fill(self) -> bytes:
        while not self._eof:
            message = anyio.from_thread.run(self._receive)
            if message["type"] != "http.request":  # http.disconnect
                self._eof = True
                raise ClientDisconnected(
                    "the client disconnected while the app read the request body"
                )
            self._eof = not message.get("more_body", False)
            body = bytes(message.get("body", b""))
            if body:
                return body
        return b""


def _environ(scope: Message, body: _BodyReader) -> dict[str, Any]:
    root_path: str = scope.get("root_path", "")
    path: str = scope["path"]
    path_info = path[len(root_path) :] if root_path and path.startswith(root_path) else path
    server = scope.get("server") or ("localhost", None)
    scheme: str = scope.get("scheme", "http")
    port = server[1] if server[1] is not None else (443 if scheme == "https" else 80)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": wsgi_string(root_path),
        "PATH_INFO": wsgi_string(path_info),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": body,
        "wsgi.errors": WsgiErrors(lambda text: log.error("%s", text.rstrip("\n"))),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = str(client[0])
        environ["REMOTE_PORT"] = str(client[1])
    headers = scope.get("headers", [])
    for name, value in headers:
        if name == b"content-length":  # the engine has checked it: one whole number
            environ["CONTENT_LENGTH"] = value.decode("latin-1")
    add_header_variables(environ, headers)
    return environ


class WsgiInAsgi:
    """An ASGI app that runs ``wsgi_app`` for each ``http`` request, in a worker thread.

    At most ``threads`` requests run at once (default: ``--threads``/``TIERCEL_THREADS``, as
    for a WSGI app served on its own); the others wait for a thread.
    """

    def __init__(self, wsgi_app: Any, threads: int | None = None) -> None:
        self.wsgi_app = wsgi_app
        self.threads = threads or worker_threads()
        self._limiter: anyio.CapacityLimiter | None = None

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # WSGI has no lifespan: say "not supported" the way ASGI servers expect.
            raise RuntimeError("a WSGI app has no lifespan")
        if scope["type"] != "http":
            raise RuntimeError(f"a WSGI app cannot take a {scope['type']!r} connection")
        if self._limiter is None:  # made here: it belongs to the running event loop
            self._limiter = anyio.CapacityLimiter(self.threads)
        await anyio.to_thread.run_sync(self._run, scope, receive, send, limiter=self._limiter)

    def _run(self, scope: Message, receive: Receive, send: Send) -> None:
        response = _Response(send)
        iterable: Iterable[bytes] | None = None
        try:
            iterable = self.wsgi_app(_environ(scope, _BodyReader(receive)), response.start)
            for block in iterable:
                response.write(block)
            response.finish()
        except Exception:
            if response.started:
                raise  # headers are out: the server resets the stream
            log.exception("the WSGI app at %r raised", scope.get("root_path") or "/")
            response.fail()
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()


class _Response:
    def __init__(self, send: Send) -> None:
        self._send = send
        self._status: int | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self.started = False

    def start(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and self.started:
            raise exc_info[1].with_traceback(exc_info[2])
        if self._status is not None and exc_info is None:
            raise RuntimeError("start_response called twice without exc_info (PEP 3333)")
        self._status = parse_status(status)[0]
        self._headers = [(name.lower(), value) for name, value in parse_headers(headers)[0]]
        return self.write

    def _call(self, message: Message) -> None:
        anyio.from_thread.run(self._send, message)

    def _start_if_needed(self) -> None:
        if self.started:
            return
        if self._status is None:
            raise RuntimeError("the WSGI app returned a body before calling start_response")
        self.started = True
        self._call(
            {"type": "http.response.start", "status": self._status, "headers": self._headers}
        )

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._start_if_needed()
        self._call({"type": "http.response.body", "body": bytes(data), "more_body": True})

    def finish(self) -> None:
        self._start_if_needed()
        self._call({"type": "http.response.body", "body": b"", "more_body": False})

    def fail(self) -> None:
        self._status = 500
        self._headers = [(b"content-type", b"text/plain; charset=utf-8")]
        self.started = True
        body = b"500 Internal Server Error\n"
        self._call({"type": "http.response.start", "status": 500, "headers": self._headers})
        self._call({"type": "http.response.body", "body": body, "more_body": False})


__all__ = ["WsgiInAsgi"]
