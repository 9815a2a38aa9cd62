"""Drive one engine connection by hand: bytes and fake time in, parsed responses out.

``Client`` wraps ``open_connection`` with a recording observer; ``EchoDriver`` runs a tiny
synchronous ASGI-style app (through ``AsgiHttpCycle``) on every request the engine hands over,
so a test can feed arbitrary bytes and look only at what goes out on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tiercel.core.asgi import DISCONNECT, AsgiHttpCycle
from tiercel.core.config import EngineConfig, Limits
from tiercel.core.connection import open_connection
from tiercel.core.context import Rejection, ServerContext, TransportInfo
from tiercel.core.events import Event, RequestReceived
from tiercel.core.http1 import Http1Protocol
from tiercel.core.stream import HttpStream

TRANSPORT = TransportInfo(("127.0.0.1", 8000), ("127.0.0.1", 50000))


class RecordingObserver:
    def __init__(self) -> None:
        self.rejections: list[Rejection] = []
        self.completed: list[HttpStream] = []

    def request_rejected(self, rejection: Rejection) -> None:
        self.rejections.append(rejection)

    def response_completed(self, stream: HttpStream) -> None:
        self.completed.append(stream)


# The HTTP/1.1 codec of a context whose test does not name one; conftest.py sets it so that
# every engine test runs against both codecs.
default_codec = "fast"


def make_context(
    limits: Limits | None = None, wall_time: float = 0.0, **config: Any
) -> ServerContext:
    config.setdefault("http1_codec", default_codec)
    engine = EngineConfig(limits=limits or Limits(), **config)
    return ServerContext(engine, RecordingObserver(), wall_time)


class Client:
    """One connection; ``streams`` lists every request the engine started, in order.

    ``conn`` is the HTTP/1.1 engine itself; with ``via_open_connection=True`` it is whatever
    ``open_connection`` picks for a cleartext connection (which sniffs for the h2 preface).
    """

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        context: ServerContext | None = None,
        now: float = 0.0,
        via_open_connection: bool = False,
        **config: Any,
    ) -> None:
        self.context = context or make_context(limits, **config)
        if via_open_connection:
            self.conn: Any = open_connection(self.context, TRANSPORT, now)
        else:
            self.conn = Http1Protocol(self.context, TRANSPORT, now)
        self._streams: list[HttpStream] = []
        self.now = now

    @property
    def observer(self) -> RecordingObserver:
        observer = self.context.observer
        assert isinstance(observer, RecordingObserver)
        return observer

    def _take(self, events: list[Event]) -> list[Event]:
        for event in events:
            if isinstance(event, RequestReceived):
                self._streams.append(event.stream)
        return events

    @property
    def streams(self) -> list[HttpStream]:
        """Every request started so far (collects pending engine events first)."""
        self.events()
        return self._streams

    def feed(self, data: bytes, now: float | None = None) -> list[Event]:
        if now is not None:
            self.now = now
        return self._take(self.conn.receive_data(data, self.now))

    def timer(self, now: float) -> list[Event]:
        self.now = now
        return self._take(self.conn.on_timer(now))

    def events(self) -> list[Event]:
        return self._take(self.conn.pop_events())

    def out(self) -> bytes:
        return self.conn.data_to_send()

    @property
    def stream(self) -> HttpStream:
        """The most recent request."""
        streams = self.streams
        assert streams, "no request has started"
        return streams[-1]


@dataclass
class Response:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    chunked: bool = False

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n.lower() == name]
        assert len(values) <= 1, f"{name!r} appears {len(values)} times"
        return values[0] if values else None

    def names(self) -> list[bytes]:
        return [n.lower() for n, _ in self.headers]


def parse_responses(data: bytes, methods: list[str] | None = None) -> list[Response]:
    """Split ``data`` into responses; fails on anything that is not well-framed.

    ``methods`` gives the request method of each final response (for HEAD); default GET.
    """
    responses: list[Response] = []
    methods = list(methods or [])
    pos = 0
    while pos < len(data):
        end = data.index(b"\r\n\r\n", pos)
        lines = data[pos:end].split(b"\r\n")
        pos = end + 4
        version, status_text, reason = [*lines[0].split(b" ", 2), b""][:3]
        assert version == b"HTTP/1.1", lines[0]
        status = int(status_text)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name, value.strip()))
        response = Response(status, reason, headers, b"")
        responses.append(response)
        if status < 200:
            continue
        method = methods.pop(0) if methods else "GET"
        if method == "HEAD" or status in (204, 304):
            continue
        if response.header(b"transfer-encoding") == b"chunked":
            response.chunked = True
            body = bytearray()
            while True:
                line_end = data.index(b"\r\n", pos)
                size = int(data[pos:line_end].split(b";")[0], 16)
                pos = line_end + 2
                if size == 0:
                    trailer_end = data.index(b"\r\n", pos)
                    assert trailer_end == pos, "unexpected trailers"
                    pos += 2
                    break
                body += data[pos : pos + size]
                assert data[pos + size : pos + size + 2] == b"\r\n"
                pos += size + 2
            response.body = bytes(body)
        else:
            length = response.header(b"content-length")
            if length is None:
                # Close-delimited.
                response.body = data[pos:]
                pos = len(data)
            else:
                n = int(length)
                response.body = data[pos : pos + n]
                assert len(response.body) == n, "truncated body"
                pos += n
    return responses


@dataclass
class Seen:
    """What the echo app saw of one request."""

    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    disconnected: bool = False


@dataclass
class _Running:
    cycle: AsgiHttpCycle
    seen: Seen
    done: bool = False


@dataclass
class EchoDriver:
    """Runs a synchronous echo app on a ``Client``: reads the whole body, then answers 200
    with a body that names the method and target. Everything the app saw is in ``seen``."""

    client: Client
    seen: list[Seen] = field(default_factory=list)
    output: bytearray = field(default_factory=bytearray)
    _running: dict[int, _Running] = field(default_factory=dict)

    def feed(self, data: bytes, now: float | None = None) -> None:
        self._handle(self.client.feed(data, now))

    def timer(self, now: float) -> None:
        self._handle(self.client.timer(now))

    def _handle(self, events: list[Event]) -> None:
        client = self.client
        pending = list(events)
        while True:
            for event in pending:
                stream = event.stream
                key = id(stream)
                if isinstance(event, RequestReceived):
                    seen = Seen(stream.method, stream.raw_target, list(stream.headers), b"")
                    self.seen.append(seen)
                    self._running[key] = _Running(AsgiHttpCycle(stream), seen)
                running = self._running.get(key)
                if running is not None and not running.done:
                    self._step(running)
            self.output += client.out()
            pending = client.events()
            if not pending:
                return

    def _step(self, running: _Running) -> None:
        cycle, seen = running.cycle, running.seen
        now = self.client.now
        while True:
            message = cycle.receive(now)
            if message is None:
                return
            if message is DISCONNECT or message["type"] == "http.disconnect":
                seen.disconnected = True
                running.done = True
                return
            seen.body += message["body"]
            if not message["more_body"]:
                break
        running.done = True
        cycle.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            },
            now,
        )
        cycle.send(
            {
                "type": "http.response.body",
                "body": b"echo " + seen.method.encode() + b" " + seen.target,
            },
            now,
        )
