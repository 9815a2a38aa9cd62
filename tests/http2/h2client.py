"""A small raw-frame HTTP/2 test client: h2 as the client, plus hand-built frame bytes.

h2 runs with outbound validation and normalisation off, so it sends whatever headers a test
asks for (upper-case names, connection-specific headers, missing pseudo-headers ...). Frames h2
would never send (DATA on stream 0, a 7-byte PING, a CONTINUATION flood) are built by hand with
``frame()`` and go out through ``send()``.

Everything the server sends is parsed twice: by h2 (for responses: ``ResponseReceived``,
``DataReceived``, ``StreamReset``, ``ConnectionTerminated`` ...) and by a plain frame splitter
(``RawFrame``), which keeps working even when the test has confused h2's state with hand-built
frames. RST_STREAM, GOAWAY and SETTINGS are read from the raw frames, so they are always exact.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

ErrorCodes = h2.errors.ErrorCodes
SettingCodes = h2.settings.SettingCodes

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4

Headers = list[tuple[bytes, bytes]]


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame's bytes, built by hand: nothing is validated."""
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream_id & 0x7FFFFFFF)
        + payload
    )


def settings_frame(values: dict[int, int] | None = None, ack: bool = False) -> bytes:
    payload = b"".join(struct.pack(">HI", k, v) for k, v in (values or {}).items())
    return frame(SETTINGS, ACK if ack else 0, 0, payload)


def ping_frame(opaque: bytes = b"12345678", ack: bool = False) -> bytes:
    return frame(PING, ACK if ack else 0, 0, opaque)


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def request_headers(
    path: str | bytes = "/", method: str | bytes = "GET", extra: Iterable = ()
) -> Headers:
    """A well-formed request header list, plus ``extra`` regular headers."""

    def b(value: str | bytes) -> bytes:
        return value if isinstance(value, bytes) else value.encode("latin-1")

    headers = [
        (b":method", b(method)),
        (b":scheme", b"http"),
        (b":authority", b"127.0.0.1"),
        (b":path", b(path)),
    ]
    headers += [(b(n), b(v)) for n, v in extra]
    return headers


class _UnlimitedH2Connection(h2.connection.H2Connection):
    """An h2 client that ignores the server's SETTINGS_MAX_CONCURRENT_STREAMS, as an
    attacker would."""

    @property
    def open_outbound_streams(self) -> int:
        return 0


@dataclass
class RawFrame:
    kind: int
    flags: int
    stream_id: int
    payload: bytes

    @property
    def error_code(self) -> int:
        if self.kind == RST_STREAM:
            return struct.unpack(">I", self.payload[:4])[0]
        if self.kind == GOAWAY:
            return struct.unpack(">I", self.payload[4:8])[0]
        raise ValueError("only RST_STREAM and GOAWAY carry an error code")

    @property
    def last_stream_id(self) -> int:
        assert self.kind == GOAWAY
        return struct.unpack(">I", self.payload[:4])[0] & 0x7FFFFFFF

    @property
    def settings(self) -> dict[int, int]:
        assert self.kind == SETTINGS
        return {
            k: v
            for k, v in (
                struct.unpack(">HI", self.payload[i : i + 6])
                for i in range(0, len(self.payload), 6)
            )
        }


def take_frames(buffer: bytearray) -> list[RawFrame]:
    """The whole frames at the front of ``buffer``, removed from it; a partial one stays."""
    frames = []
    while len(buffer) >= 9:
        length = int.from_bytes(buffer[:3], "big")
        if len(buffer) < 9 + length:
            break
        stream_id = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
        frames.append(RawFrame(buffer[3], buffer[4], stream_id, bytes(buffer[9 : 9 + length])))
        del buffer[: 9 + length]
    return frames


def split_frames(data: bytes) -> list[RawFrame]:
    """Every frame in ``data``, which holds whole frames only."""
    buffer = bytearray(data)
    frames = take_frames(buffer)
    assert not buffer, f"{len(buffer)} bytes of a partial frame at the end"
    return frames


@dataclass
class StreamResult:
    """What the server sent on one stream."""

    status: int | None = None
    headers: Headers = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None  # the error code of the server's (first) RST_STREAM on it

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class H2Client:
    """One prior-knowledge h2c connection to ``127.0.0.1:port``.

    ``settings`` become the client's initial SETTINGS (e.g. INITIAL_WINDOW_SIZE=0). With
    ``credit`` on, received DATA is acknowledged at once (connection and stream windows);
    streams in ``hold`` only get the connection window credited, so their own window runs dry.
    ``ignore_stream_limit`` opens streams past the server's MAX_CONCURRENT_STREAMS.
    """

    def __init__(
        self,
        port: int,
        *,
        settings: dict[int, int] | None = None,
        credit: bool = True,
        timeout: float = 5.0,
        handshake: bool = True,
        ignore_stream_limit: bool = False,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        config = h2.config.H2Configuration(
            client_side=True,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
            header_encoding=None,
        )
        factory = _UnlimitedH2Connection if ignore_stream_limit else h2.connection.H2Connection
        self.h2 = factory(config=config)
        if settings:
            self.h2.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.h2.initiate_connection()
        self.credit = credit
        self.hold: set[int] = set()
        self.events: list[h2.events.Event] = []
        self.frames: list[RawFrame] = []
        self.streams: dict[int, StreamResult] = {}
        self.closed = False  # the server closed (or reset) the TCP connection
        self.send_failed = False
        self.h2_error: Exception | None = None
        self._raw = bytearray()
        self.flush()
        if handshake:
            self.read_until(lambda c: c.server_settings is not None, timeout)

    # -- sending ----------------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Raw bytes to the server; False when the server has already gone."""
        if not data:
            return True
        try:
            self.sock.sendall(data)
        except OSError:  # broken pipe, reset, or a timeout because the server stopped reading
            self.send_failed = True
            return False
        return True

    def flush(self) -> bool:
        return self.send(self.h2.data_to_send())

    def request(
        self,
        path: str | bytes = "/",
        method: str = "GET",
        extra: Iterable = (),
        body: bytes | None = None,
        *,
        headers: Headers | None = None,
        end_stream: bool = True,
        flush: bool = True,
    ) -> int:
        """Open a stream with h2 (validation off, so ``headers`` may be malformed). A ``body``
        goes out in one DATA frame; ``end_stream`` applies to the last frame sent."""
        stream_id = self.h2.get_next_available_stream_id()
        if headers is None:
            headers = request_headers(path, method, extra)
        self.h2.send_headers(stream_id, headers, end_stream=end_stream and body is None)
        self.streams[stream_id] = StreamResult()
        if body is not None:
            self.h2.send_data(stream_id, body, end_stream=end_stream)
        if flush:
            self.flush()
        return stream_id

    def raw_headers(
        self,
        stream_id: int,
        headers: Headers,
        *,
        end_stream: bool = True,
        end_headers: bool = True,
    ) -> bytes:
        """A HEADERS frame for a stream h2 does not know about, encoded with h2's own HPACK
        encoder so the compression context stays in step. Returns the bytes; send them.
        h2 cannot parse a response on such a stream (``h2_error`` is set, the raw frames go
        on): use it where the server is expected to end the connection."""
        block = self.h2.encoder.encode(headers)
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        self.streams.setdefault(stream_id, StreamResult())
        return frame(HEADERS, flags, stream_id, block)

    def upload(
        self,
        stream_id: int,
        body: bytes,
        *,
        end_stream: bool = True,
        timeout: float = 10.0,
    ) -> int:
        """Send ``body`` as the server's windows allow, reading WINDOW_UPDATEs in between.
        Returns how many bytes went out: fewer than ``len(body)`` if the windows stayed shut
        until the timeout (or the stream or connection ended)."""
        deadline = time.monotonic() + timeout
        view = memoryview(body)
        offset = 0
        while offset < len(body):
            try:
                window = self.h2.local_flow_control_window(stream_id)
            except h2.exceptions.ProtocolError:  # the stream (or connection) is closed
                return offset
            size = min(window, self.h2.max_outbound_frame_size, len(body) - offset)
            if size <= 0:
                if time.monotonic() >= deadline or self.closed:
                    return offset
                self.read_for(0.02)
                continue
            last = end_stream and offset + size == len(body)
            self.h2.send_data(stream_id, bytes(view[offset : offset + size]), end_stream=last)
            offset += size
            if not self.flush():
                return offset
            self.read_for(0)
        if end_stream and not body:
            self.h2.end_stream(stream_id)
            self.flush()
        return offset

    def grant(self, stream_id: int, increment: int) -> None:
        """WINDOW_UPDATE for one stream (0: the connection), through h2."""
        self.h2.increment_flow_control_window(increment, stream_id=stream_id or None)
        self.flush()

    # -- receiving --------------------------------------------------------------------------

    def read_for(self, seconds: float) -> list[h2.events.Event]:
        """Read whatever arrives within ``seconds`` (0: only what is already there)."""
        return self.read_until(lambda c: False, seconds)

    def read_until(
        self, condition: Callable[[H2Client], bool], timeout: float = 5.0
    ) -> list[h2.events.Event]:
        """Read until ``condition(self)`` holds, the server closes, or the timeout passes.
        Returns the h2 events seen meanwhile."""
        start = len(self.events)
        deadline = time.monotonic() + timeout
        while not condition(self) and not self.closed:
            remaining = deadline - time.monotonic()
            # Past the deadline, one last non-blocking pass drains what has arrived.
            self.sock.settimeout(min(remaining, 0.1) if remaining > 0 else 0.0)
            try:
                data = self.sock.recv(262_144)
            except (TimeoutError, BlockingIOError):
                if remaining <= 0:
                    break
                continue
            except OSError:  # reset by the server
                data = b""
            if not data:
                self.closed = True
                break
            self._feed(data)
        self.sock.settimeout(self.timeout)
        return self.events[start:]

    def response(self, stream_id: int, timeout: float = 5.0) -> StreamResult:
        self.read_until(lambda c: c.streams[stream_id].done, timeout)
        return self.streams[stream_id]

    def _feed(self, data: bytes) -> None:
        self._split_frames(data)
        if self.h2_error is None:
            try:
                events = self.h2.receive_data(data)
            except (h2.exceptions.ProtocolError, AssertionError) as exc:
                self.h2_error = exc
                # h2 queued a GOAWAY of its own; this client only observes, it never sends it.
                self.h2.clear_outbound_data_buffer()
                events = []
            for event in events:
                self._handle(event)
            self.flush()

    def _split_frames(self, data: bytes) -> None:
        self._raw += data
        for found in take_frames(self._raw):
            self.frames.append(found)
            if found.kind == RST_STREAM:
                result = self.streams.setdefault(found.stream_id, StreamResult())
                if result.reset is None:
                    result.reset = found.error_code

    def _handle(self, event: h2.events.Event) -> None:
        self.events.append(event)
        stream_id = getattr(event, "stream_id", None)
        result = self.streams.setdefault(stream_id, StreamResult()) if stream_id else None
        if isinstance(event, h2.events.ResponseReceived) and result is not None:
            result.headers = list(event.headers)
            for name, value in event.headers:
                if name == b":status":
                    result.status = int(value)
        elif isinstance(event, h2.events.DataReceived) and result is not None:
            result.body += event.data
            self._credit(event.stream_id, event.flow_controlled_length)
        elif isinstance(event, h2.events.StreamEnded) and result is not None:
            result.ended = True

    def _credit(self, stream_id: int, length: int) -> None:
        if not self.credit or not length:
            return
        try:
            if stream_id in self.hold:
                self.h2.increment_flow_control_window(length)
            else:
                self.h2.acknowledge_received_data(length, stream_id)
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.increment_flow_control_window(length)

    # -- what the server said -------------------------------------------------------------------

    @property
    def server_settings(self) -> dict[int, int] | None:
        for found in self.frames:
            if found.kind == SETTINGS and not found.flags & ACK:
                return found.settings
        return None

    @property
    def goaway(self) -> RawFrame | None:
        """The first GOAWAY the server sent, if any."""
        for found in self.frames:
            if found.kind == GOAWAY:
                return found
        return None

    def resets(self, code: int | None = None) -> dict[int, int]:
        """Streams the server reset (stream id -> the first RST_STREAM's error code),
        optionally only those reset with ``code``."""
        found: dict[int, int] = {}
        for f in self.frames:
            if f.kind == RST_STREAM and f.stream_id not in found:
                found[f.stream_id] = f.error_code
        return {s: c for s, c in found.items() if code is None or c == code}

    def acked(self, opaque: bytes) -> bool:
        """The server has answered the (last) PING carrying ``opaque``."""
        for found in reversed(self.frames):
            if found.kind == PING:
                return bool(found.flags & ACK) and found.payload == opaque
        return False

    @property
    def ended(self) -> bool:
        """The server is done with this connection: it sent GOAWAY or closed the socket."""
        return self.closed or self.goaway is not None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        self.closed = True


def get(port: int, path: str = "/", timeout: float = 3.0) -> StreamResult:
    """One GET on a fresh connection."""
    client = H2Client(port, timeout=timeout)
    try:
        stream_id = client.request(path)
        return client.response(stream_id, timeout)
    finally:
        client.close()
