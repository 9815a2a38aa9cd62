"""A custom server in full: the engine driven by ``selectors`` alone (docs/custom-servers.md)."""

import contextlib
import selectors
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from tiercel.apps.feature_host import FeatureApp, FeatureAppHost, hello_app
from tiercel.core.config import EngineConfig
from tiercel.core.connection import EngineConnection, open_connection
from tiercel.core.context import ServerContext, TransportInfo
from tiercel.core.events import Event

HIGH_WATER, GRACE, NEVER = 65_536, 5.0, float("inf")  # unsent bytes; seconds; no deadline
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


@dataclass(eq=False)
class Client:
    sock: socket.socket
    conn: EngineConnection
    out: bytearray = field(default_factory=bytearray)  # bytes the socket has not taken yet
    mask: int = 0  # what the selector watches for; 0 = not registered
    close_by: float = NEVER  # once the engine is done with it: when to stop flushing
    held: list[Event] = field(default_factory=list)  # events held back while out is full


class SelectorsServer:
    def __init__(self, app: FeatureApp, host: str, port: int, **config: Any) -> None:
        self.host, self.port, self.context = host, port, ServerContext(EngineConfig(**config))
        self.app_host = FeatureAppHost(app, self.context.addresses)
        self._selector, self._clients = selectors.DefaultSelector(), set[Client]()
        self._wake_r, self._wake_w = socket.socketpair()  # stop() writes a byte to wake select
        self._stop_at = NEVER  # set by stop()

    def bind(self) -> None:
        """Listen. Port 0 becomes the real port, in ``port`` and in the addresses feature."""
        self._listener = socket.create_server((self.host, self.port))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self.context.addresses.addresses.append(f"http://{self.host}:{self.port}")
        self._selector.register(self._listener, READ, lambda mask, now: self._accept(now))
        self._selector.register(self._wake_r, READ, lambda mask, now: self._wake_r.recv(64))

    def stop(self) -> None:
        """Ask ``serve_forever`` (from any thread) to finish the responses in flight and return."""
        self._stop_at = min(self._stop_at, time.monotonic() + GRACE)
        with contextlib.suppress(OSError):  # already stopped
            self._wake_w.send(b"\0")

    def serve_forever(self) -> None:
        try:
            while (self._clients or self._stop_at == NEVER) and time.monotonic() < self._stop_at:
                now = time.monotonic()
                self.context.tick(time.time())  # the Date header: rebuilt when the second changes
                timeout = min(now + 1.0, self._stop_at, *map(self._deadline, self._clients)) - now
                for key, mask in self._selector.select(max(timeout, 0.0)):
                    key.data(mask, time.monotonic())  # _accept, wake up, or a client's _io
                now = time.monotonic()
                for c in [c for c in self._clients if self._deadline(c) <= now]:
                    c.close_by = now  # should this timer close it, unsent bytes are dropped
                    self._handle(c, c.conn.on_timer(now), now)
                if self._stop_at < NEVER and self._listener in self._selector.get_map():
                    self._selector.unregister(self._listener)  # stopping: idle ones close at once
                    for c in list(self._clients):
                        self._handle(c, c.conn.shutdown(now), now)
        finally:
            for c in list(self._clients):
                self._close(c, time.monotonic())
            for sock in (self._listener, self._wake_r, self._wake_w):
                sock.close()
            self._selector.close()

    def _accept(self, now: float) -> None:
        try:
            sock, remote = self._listener.accept()
        except OSError:  # taken already, or out of descriptors: the selector will say again
            return
        if not self.context.try_open_connection():  # over the connection limit
            return sock.close()
        sock.setblocking(False)
        conn = open_connection(self.context, TransportInfo(sock.getsockname(), remote), now)
        self._clients.add(c := Client(sock, conn))
        self._flush(c, now)

    def _io(self, c: Client, mask: int, now: float) -> None:
        try:  # receiving b"" tells the engine that the peer closed its side
            events = c.conn.receive_data(c.sock.recv(65_536), now) if mask & READ else []
        except BlockingIOError:
            return
        except OSError:
            return self._close(c, now)
        self._handle(c, events, now)  # flushes, and runs what was held back

    def _handle(self, c: Client, events: list[Event], now: float) -> None:
        c.held += events  # pipelined requests wait while the client is not reading its answers
        self._flush(c, now)
        while c.held and len(c.out) <= HIGH_WATER and c in self._clients:
            events, c.held = c.held, []
            self.app_host.handle(events, now)
            c.held += c.conn.pop_events()  # running the app queues more, e.g. the next request
            self._flush(c, now)

    def _flush(self, c: Client, now: float) -> None:
        c.out += c.conn.data_to_send()
        try:
            del c.out[: c.sock.send(c.out) if c.out else 0]
        except BlockingIOError:
            pass
        except OSError:
            return self._close(c, now)
        c.conn.set_write_blocked(len(c.out) > HIGH_WATER, now, len(c.out))
        if c.conn.should_close and (not c.out or now >= c.close_by):
            return self._close(c, now)
        c.close_by = min(c.close_by, now + GRACE) if c.conn.should_close else NEVER
        mask = READ if c.conn.wants_read and len(c.out) <= HIGH_WATER else 0
        if (mask := mask | (WRITE if c.out else 0)) != c.mask:
            if c.mask:  # a selector cannot watch for nothing: unregister, register anew
                self._selector.unregister(c.sock)
            if mask:
                self._selector.register(c.sock, mask, lambda mask, now: self._io(c, mask, now))
            c.mask = mask

    def _deadline(self, c: Client) -> float:  # close_by is NEVER until the engine is done
        return c.close_by if (deadline := c.conn.next_deadline()) is None else deadline

    def _close(self, c: Client, now: float) -> None:
        if c in self._clients:
            self._clients.remove(c)
            if c.mask:
                self._selector.unregister(c.sock)
            c.sock.close()
            self.app_host.handle(c.held + c.conn.connection_lost(now), now)  # all aborted now
            self.context.connection_closed()


def serve(app: FeatureApp, host: str = "127.0.0.1", port: int = 5001) -> None:
    """Serve ``app`` until interrupted (Ctrl+C); ``python -m`` this module to say hello."""
    server = SelectorsServer(app, host, port)
    server.bind()
    print(f"serving on {server.context.addresses.addresses[0]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    serve(hello_app)
