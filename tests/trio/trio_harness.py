"""A real ``TrioServer`` on loopback, served by ``trio.run`` in a background thread."""

from __future__ import annotations

import re
import socket
import threading
from typing import Any

import trio
from tiercel.adapters.trio_adapter import TrioServer
from tiercel.apps.options import ServerOptions
from tiercel.core.config import EngineConfig, Limits


class RunningTrioServer:
    """``RunningTrioServer(app, limits=..., **ServerOptions fields)``; ``url`` is the first
    address. ``call(fn, *args)`` runs a sync function in the server's trio thread."""

    def __init__(self, app: Any, *, limits: Limits | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("urls", "http://127.0.0.1:0")
        kwargs.setdefault("access_log", False)
        kwargs.setdefault("shutdown_timeout", 5.0)
        if limits is not None:
            kwargs["engine"] = EngineConfig(limits=limits)
        self.server = TrioServer(app, ServerOptions(**kwargs))
        self.token: trio.lowlevel.TrioToken | None = None
        self.error: BaseException | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                await nursery.start(self.server.serve)
                self._started.set()

        try:
            trio.run(main)
        except BaseExceptionGroup as group:  # nursery.start's error, as serve raised it
            self.error = group.exceptions[0] if len(group.exceptions) == 1 else group
        except BaseException as exc:
            self.error = exc
        finally:
            self._started.set()

    def start(self) -> RunningTrioServer:
        self._thread.start()
        self._started.wait(10)
        if self.error is not None:
            raise self.error
        return self

    def call(self, fn: Any, *args: Any) -> Any:
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)

    def request_stop(self) -> None:
        if self._thread.is_alive():
            self.call(self.server.request_stop)

    def stop(self, timeout: float = 30.0) -> None:
        self.request_stop()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the trio server did not stop"
        if self.error is not None:
            raise self.error

    def stop_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.stop, daemon=True)
        thread.start()
        return thread

    @property
    def stopped(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def url(self) -> str:
        return self.server.addresses[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


def read_response(sock: socket.socket, timeout: float = 5) -> tuple[bytes, bytes]:
    """One Content-Length framed response: (head, body)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length: *(\d+)\r?$", head)
    length = int(match.group(1)) if match else 0
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


def dechunk(body: bytes) -> bytes:
    """Decode a complete chunked body."""
    parts, offset = [], 0
    while True:
        end = body.index(b"\r\n", offset)
        size = int(body[offset:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(parts)
        parts.append(body[end + 2 : end + 2 + size])
        offset = end + 2 + size + 2
