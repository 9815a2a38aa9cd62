"""ASGI 3 translation, without any awaiting.

``AsgiHttpCycle`` turns ASGI ``receive``/``send`` messages into operations on a stream (any
object with the request, response and body features). ``receive`` returns ``None`` when the app
must wait; the adapter then waits until the engine reports the stream updated and asks again.
So the same translation serves every runtime, and the adapter's part is a three-line loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import LocalProtocolError
from .files import (
    PATHSEND_EXTENSION,
    ZEROCOPYSEND_EXTENSION,
    FileBody,
    file_body_from_message,
    prepare_file_response,
)
from .headers import cached_header_facts
from .stream import ClientDisconnected, HttpStream

Message = dict[str, Any]
Headers = list[tuple[bytes, bytes]]

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
DISCONNECT: Mapping[str, Any] = {"type": "http.disconnect"}

ADDRESSES_EXTENSION = "tiercel.server_addresses"
TRAILERS_EXTENSION = "http.response.trailers"
INFORMATIONAL_EXTENSION = "http.response.informational"
# Advertised by adapters that carry out ``AsgiHttpCycle.pending_file`` (core/files.py).
FILE_EXTENSIONS: Mapping[str, Any] = {PATHSEND_EXTENSION: {}, ZEROCOPYSEND_EXTENSION: {}}


def server_tuple(local: tuple[str, int] | str | None) -> tuple[str, int | None] | None:
    if type(local) is tuple and len(local) == 2:
        return local  # immutable: every request of the connection may share it
    if local is None:
        return None
    if isinstance(local, str):
        return (local, None)  # unix socket path, as the ASGI spec says
    return (local[0], local[1])


def http_scope(
    stream: HttpStream, state: dict[str, Any] | None, extensions: dict[str, Any]
) -> Message:
    """The ``http`` scope. ``path`` includes ``root_path``, as the ASGI spec asks."""
    path_base = stream.path_base
    # A dictionary of the request's own: an app that adds to it must not reach later requests.
    extensions = (
        {**extensions, TRAILERS_EXTENSION: {}} if stream.accepts_trailers else extensions.copy()
    )
    scope: Message = {
        "type": "http",
        "asgi": ASGI_VERSION,
        "http_version": stream.http_version,
        "method": stream.method,
        "scheme": stream.scheme,
        "path": path_base + stream.path if path_base else stream.path,
        "raw_path": stream.raw_path,
        "query_string": stream.query_string,
        "root_path": path_base,
        "headers": stream.headers,
        "client": stream.remote_address,
        "server": server_tuple(stream.local_address),
        "extensions": extensions,
    }
    if state is not None:
        scope["state"] = state.copy()
    return scope


def lifespan_scope(state: dict[str, Any], extensions: dict[str, Any]) -> Message:
    return {"type": "lifespan", "asgi": ASGI_VERSION, "state": state, "extensions": extensions}


def _headers(value: Any) -> Headers:
    if value is None:
        return []
    if not isinstance(value, Iterable) or isinstance(value, bytes | str):
        raise LocalProtocolError(
            f"ASGI: 'headers' must be an iterable of [name, value] byte pairs (got {value!r})"
        )
    out: Headers = []
    for item in value:
        try:
            name, val = item
        except (TypeError, ValueError):
            raise LocalProtocolError(
                f"ASGI: each header must be a [name, value] pair of bytes (got {item!r})"
            ) from None
        if not isinstance(name, bytes) or not isinstance(val, bytes):
            raise LocalProtocolError(
                f"ASGI: header names and values must be bytes (got {name!r}: {val!r})"
            )
        out.append((name, val))
    return out


class AsgiHttpCycle:
    __slots__ = (
        "_body_done",
        "_request_delivered",
        "_start_received",
        "_trailers",
        "pending_file",
        "stream",
    )

    def __init__(self, stream: HttpStream) -> None:
        self.stream = stream
        self._start_received = False
        self._request_delivered = False
        self._trailers = False  # the app announced trailers in http.response.start
        self._body_done = False
        # A pathsend/zerocopysend message the adapter must carry out (send returned False).
        self.pending_file: FileBody | None = None

    def receive(self, now: float | None = None) -> Mapping[str, Any] | None:
        stream = self.stream
        if stream.aborted_flag or stream.response_complete:
            return DISCONNECT
        if self._request_delivered:
            return None
        data = stream.read_body(now)
        if stream.aborted:  # reading may have refused the body (413)
            return DISCONNECT
        if stream.body_complete_flag and not stream.body_buffered:
            self._request_delivered = True
            return {"type": "http.request", "body": data, "more_body": False}
        if data:
            return {"type": "http.request", "body": data, "more_body": True}
        return None

    def send(self, message: Mapping[str, Any], now: float | None = None) -> bool:
        """Apply one ASGI message. True when it may have produced bytes to send (the adapter
        then flushes); ``http.response.start`` alone is held until the first body bytes."""
        stream = self.stream
        try:
            kind = message["type"]
        except (KeyError, TypeError):
            raise LocalProtocolError(f"ASGI: a message needs a 'type' (got {message!r})") from None
        if kind == "http.response.body":
            if not self._start_received:
                raise LocalProtocolError(
                    "ASGI: 'http.response.body' sent before 'http.response.start'"
                )
            body = message.get("body", b"")
            if not isinstance(body, bytes):
                if isinstance(body, bytearray | memoryview):
                    body = bytes(body)
                else:
                    raise LocalProtocolError(f"ASGI: 'body' must be bytes (got {type(body)})")
            if stream.aborted_flag:
                raise ClientDisconnected("the client has disconnected")
            if stream.response_complete or self._body_done:
                raise LocalProtocolError("ASGI: message sent after the response was complete")
            if message.get("more_body", False):
                stream.write(body, now)
            elif self._trailers:
                self._body_done = True  # the stream ends with http.response.trailers
                stream.write(body, now)
            else:
                stream.complete(body, now)
        elif kind == "http.response.trailers":
            if not self._trailers:
                raise LocalProtocolError(
                    "ASGI: 'http.response.trailers' without 'trailers': True in the start message"
                )
            if stream.aborted_flag:
                raise ClientDisconnected("the client has disconnected")
            if stream.response_complete:
                raise LocalProtocolError("ASGI: message sent after the response was complete")
            headers = _headers(message.get("headers"))
            if message.get("more_trailers", False):
                raise LocalProtocolError(
                    "ASGI: 'more_trailers' is not supported; send them at once"
                )
            if not self._body_done:
                raise LocalProtocolError("ASGI: trailers sent before the body was complete")
            # A client that did not ask for trailers (te: trailers) does not get them.
            stream.complete(b"", now, headers if stream.accepts_trailers else None)
        elif kind == "http.response.informational":
            if self._start_received:
                raise LocalProtocolError(
                    "ASGI: 'http.response.informational' after 'http.response.start'"
                )
            status = message.get("status")
            if isinstance(status, bool) or not isinstance(status, int):
                raise LocalProtocolError(
                    f"ASGI: informational 'status' must be an int ({status!r})"
                )
            if stream.aborted_flag:
                raise ClientDisconnected("the client has disconnected")
            stream.send_informational(status, _headers(message.get("headers")))
        elif kind == "http.response.start":
            if self._start_received:
                raise LocalProtocolError("ASGI: 'http.response.start' sent twice")
            status = message.get("status")
            # A plain int passes the first check alone; an IntEnum (HTTPStatus) the second.
            if (
                not (
                    type(status) is int
                    or (isinstance(status, int) and not isinstance(status, bool))
                )
                or not 200 <= status <= 999
            ):
                raise LocalProtocolError(
                    f"ASGI: 'status' must be an int from 200 to 999 (got {status!r})"
                )
            if stream.aborted_flag:
                raise ClientDisconnected("the client has disconnected")
            stream.status = status
            given = message.get("headers")
            known = cached_header_facts(given)  # checked before: skip the checks
            stream.response_headers = list(known.headers) if known else _headers(given)
            self._trailers = bool(message.get("trailers", False))
            self._start_received = True
            return False
        elif kind in {"http.response.pathsend", "http.response.zerocopysend"}:
            if not self._start_received:
                raise LocalProtocolError(f"ASGI: {kind!r} sent before 'http.response.start'")
            if stream.aborted_flag:
                raise ClientDisconnected("the client has disconnected")
            if stream.response_complete or self._body_done:
                raise LocalProtocolError("ASGI: message sent after the response was complete")
            self.pending_file = file_body_from_message(dict(message))
            return False
        else:
            raise LocalProtocolError(f"ASGI: unexpected message type {kind!r} in an http scope")
        return True

    def begin_file(self, count: int) -> bool:
        """The adapter knows the size of ``pending_file``'s range: fix the framing. True when
        the file ends the response."""
        pending = self.pending_file
        if pending is None:
            raise LocalProtocolError("begin_file without a pending file message")
        end = not pending.more_body
        if end and self._trailers:
            self._body_done = True  # the stream ends with http.response.trailers
            end = False
        prepare_file_response(self.stream, count, end)
        return end

    def app_finished(self, now: float | None = None) -> str | None:
        """The app returned or raised. Fix up what it left undone; say what, for the log."""
        stream = self.stream
        try:
            return self._fix_up(now)
        finally:
            stream.finish()

    def _fix_up(self, now: float | None) -> str | None:
        stream = self.stream
        if stream.response_complete or stream.aborted_flag:
            return None
        if not stream.response_started:
            stream.status = 500
            stream.reason = None
            stream.response_headers = [(b"content-type", b"text/plain; charset=utf-8")]
            stream.complete(b"Internal Server Error\n", now)
            return "the app did not send a complete response; answered 500"
        stream.abort()
        return "the app ended before finishing its response; connection aborted"
