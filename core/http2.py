"""The HTTP/2 connection engine: one object per connection, no I/O, no clock.

Theory of operation
-------------------
This module speaks HTTP/2 itself: it splits the bytes into frames, keeps each stream's state
(RFC 9113 5.1) and both directions of flow control, and writes frames straight into one output
list. Frame layouts and HPACK (both directions) are in http2_frames.py. There is no event
layer between the frames and the server's decisions: each frame's handler acts at once, so a
request costs a few dict lookups on top of its own work.

Two objects per stream. ``self._wire[id]`` is the stream as the peer sees it: whether each side
has ended, its two flow-control windows, the body length promised and received. It goes away
when both sides have ended or either side reset the stream. The ``HttpStream`` (the same
feature object HTTP/1.1 uses) is the request as the app sees it; it stays in ``self._streams``
until its response is finished *and* the app has let go of it (``stream_finished``). Streams
whose app is still running count against ``max_concurrent_streams`` even after the peer reset
them, so resetting streams quickly (CVE-2023-44487) cannot pile up work; a new stream over the
limit gets REFUSED_STREAM.

Errors. A malformed request (RFC 9113 8.2-8.3, validated here) or a body that does not match
its content-length is a stream error: RST_STREAM(PROTOCOL_ERROR) on that stream only, as RFC
9113 8.1.1 allows; the other streams carry on. Frames that break the framing rules, HPACK
failures and flow-control violations raise ``_ConnectionError``, which ends the connection with
GOAWAY carrying the RFC's error code. Frames that arrive on a stream after we reset it are
ignored (RFC 9113 5.1): the ids of recently reset streams are remembered for that.

Flow control. Inbound, the connection window is credited as soon as bytes arrive and a stream's
window only as its app reads, so one slow reader holds back only its own stream; credit goes
out once half a window has been used. Outbound, a response that fits the windows goes out with
its head at once; anything else waits in its stream's send buffer, and ``_flush`` moves bytes
from the buffers into DATA frames as windows allow, round-robin. An app's ``send`` waits
(``can_write`` false) while its own buffer is over ``max_response_buffer_size``. A stream stuck
behind a zero window for longer than the minimum response data rate allows is reset, so a
stalled peer cannot hold the app forever.

Abuse limits. Within each one-second window the connection tolerates a bounded number of
stream resets (peer or ours: rapid reset and MadeYouReset), PINGs, SETTINGS and empty DATA
frames; past that it sends GOAWAY(ENHANCE_YOUR_CALM) and closes. A header block that grows
past the header limits (a CONTINUATION flood or an HPACK bomb) ends the connection.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from .caches import BoundedCache
from .config import DataRate
from .context import Rejection, ServerContext, TransportInfo
from .errors import ConfigError, LocalProtocolError
from .events import Event, RequestReceived, StreamUpdated
from .files import FileSegment
from .flush import ABORT, CLOSE, KEEP_READING, NO_EVENTS, Flush
from .forwarded import apply_forwarded
from .headers import escape_for_log, validate_response_headers
from .http1_head import ALLOW_ALL_BUT_CONNECT
from .http2_frames import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    FRAME_HEADER,
    GOAWAY,
    HEADERS,
    MAX_WINDOW,
    PADDED,
    PING,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    SETTINGS_ENABLE_CONNECT_PROTOCOL,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_HEADER_TABLE_SIZE,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_FRAME_SIZE,
    SETTINGS_MAX_HEADER_LIST_SIZE,
    WINDOW_UPDATE,
    ErrorCode,
    HeaderDecoder,
    HeaderEncoder,
    HeaderListTooLarge,
    HpackError,
    frame,
    frame_header,
    goaway_frame,
    parse_settings,
    rst_stream_frame,
    settings_frame,
    unpack_goaway,
    unpack_u32,
    window_update_frame,
)
from .pairing import check_pairing_token
from .stream import HttpStream
from .url_prefixes import match_path_base

Headers = list[tuple[bytes, bytes]]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
# Never sent in a response: connection-specific, or (te) only meaningful in a request.
_NOT_IN_RESPONSES = _CONNECTION_SPECIFIC | {b"te"}
# Headers of an h2c upgrade request that belong to the HTTP/1.1 hop, not to the request.
_UPGRADE_HOP_BY_HOP = frozenset(
    {b"connection", b"upgrade", b"http2-settings", b"keep-alive", b"transfer-encoding"}
)
# RFC 3986 3.1; what Kestrel's AllowAlternateSchemes accepts in :scheme.
_URI_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*")
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
_MAX_STREAM_ID = 2**31 - 1
# A header block may come in this many CONTINUATION frames at most (h2 and nghttp2 allow
# about as many); more is a flood of frames that carry next to nothing.
_MAX_CONTINUATIONS: Final = 64
# How many ids of streams we reset are remembered, to ignore frames still in flight on them.
_RESET_MEMORY: Final = 1024
_SETTINGS_ACK: Final = frame(SETTINGS, ACK, 0)
_KEEP_ALIVE_PING: Final = frame(PING, 0, 0, b"tiercel\x00")
_STATUS_CODES: Final = {status: str(status).encode() for status in range(100, 1000)}
# One-byte indexed fields only (index 1-126): such a block cannot change the HPACK table.
_INDEXED_ONLY: Final = re.compile(rb"[\x80-\xfe]+")
_CACHED_BLOCK_SIZE: Final = 256
_CACHED_BLOCKS: Final = 64


@dataclass(frozen=True, slots=True)
class Http2Limits:
    """HTTP/2 settings and abuse limits. Defaults follow Kestrel's ``Http2Limits``."""

    max_concurrent_streams: int = 100
    header_table_size: int = 4096
    max_frame_size: int = 16_384
    max_header_list_size: int = 32_768
    initial_connection_window_size: int = 1_048_576
    initial_stream_window_size: int = 786_432
    keep_alive_ping_delay: float | None = None  # off, as in Kestrel
    keep_alive_ping_timeout: float = 20.0
    # Per one-second window; past these the peer is misbehaving (GOAWAY ENHANCE_YOUR_CALM).
    max_resets_per_second: int = 200
    max_pings_per_second: int = 50
    max_settings_per_second: int = 50
    max_empty_frames_per_second: int = 1000

    def __post_init__(self) -> None:
        if not 1 <= self.max_concurrent_streams <= _MAX_STREAM_ID:
            raise ConfigError(
                "http2.max_concurrent_streams must be 1 or more "
                f"(got {self.max_concurrent_streams})"
            )
        if not 16_384 <= self.max_frame_size <= 16_777_215:
            raise ConfigError(
                f"http2.max_frame_size must be from 16384 to 16777215 (got {self.max_frame_size})"
            )
        if not 65_535 <= self.initial_connection_window_size <= _MAX_STREAM_ID:
            raise ConfigError("http2.initial_connection_window_size must be 65535 to 2^31-1")
        if not 0 <= self.initial_stream_window_size <= _MAX_STREAM_ID:
            raise ConfigError("http2.initial_stream_window_size must be 0 to 2^31-1")
        delay = self.keep_alive_ping_delay
        if delay is not None and not delay >= 1.0:
            raise ConfigError(
                f"http2.keep_alive_ping_delay must be at least 1 second or None (got {delay})"
            )
        if not self.keep_alive_ping_timeout > 0:
            raise ConfigError("http2.keep_alive_ping_timeout must be > 0 seconds")


class _ConnectionError(Exception):
    """A connection error (RFC 9113 5.4.1): GOAWAY with ``code``, then close."""

    def __init__(self, code: ErrorCode, message: str, reason: str = "h2_protocol_error") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class _CachedBlock:
    """A decoded request header block, and once validated, the request it makes."""

    __slots__ = ("generation", "headers", "request")

    def __init__(self, generation: int, headers: Headers) -> None:
        self.generation = generation
        self.headers = headers
        self.request: _Request | None = None


class _Wire:
    """One stream's state on the wire (RFC 9113 5.1); gone once the stream is closed."""

    __slots__ = (
        "expected_length",
        "received_length",
        "recv_closed",
        "recv_unacked",
        "recv_window",
        "send_closed",
        "send_window",
    )

    def __init__(self, recv_window: int, send_window: int, recv_closed: bool) -> None:
        self.recv_window = recv_window  # what the peer may still send us
        self.recv_unacked = 0  # read by the app, not yet credited back
        self.send_window = send_window
        self.recv_closed = recv_closed  # the peer sent END_STREAM
        self.send_closed = False  # we sent END_STREAM
        self.expected_length: int | None = None  # the request's content-length
        self.received_length = 0


class _RateWindow:
    """Counts events in the current one-second window of the engine's clock."""

    __slots__ = ("count", "started")

    def __init__(self) -> None:
        self.started = 0.0
        self.count = 0

    def hit(self, now: float) -> int:
        if now - self.started >= 1.0:
            self.started = now
            self.count = 0
        self.count += 1
        return self.count


class Http2Protocol:
    def __init__(
        self,
        context: ServerContext,
        transport: TransportInfo,
        now: float,
        limits: Http2Limits | None = None,
        upgrade_settings: bytes | None = None,
    ) -> None:
        self._context = context
        self._limits = context.config.limits
        h2_limits = self._h2_limits = limits or Http2Limits()
        self._transport = transport
        self.connection_id = context.next_connection_id()
        self._now = now
        self._streams: dict[int, HttpStream] = {}
        self._wire: dict[int, _Wire] = {}
        self._reset_by_us: dict[int, None] = {}  # recent ids, oldest first
        self._send_buffers: dict[int, bytearray] = {}
        self._ending: set[int] = set()  # streams whose app has sent the last body bytes
        # Streams with bytes waiting for window: (since, bytes flushed by then).
        self._blocked_since: dict[int, tuple[float, int]] = {}
        self._flushed: dict[int, int] = {}  # response bytes sent from send buffers, per stream
        self._credited: dict[int, int] = {}  # body bytes already credited back, per stream
        self._finished: set[int] = set()  # streams whose app has let go of them
        self._running_apps = 0
        self._events: list[Event] = []
        self._closed = False
        self._goaway_sent = False
        self._goaway_error = False  # the GOAWAY sent carried an error code
        self._shutting_down = False
        self._highest_stream_id = 0
        self._idle_deadline: float | None = now + self._limits.keep_alive_timeout
        self._write_deadline: float | None = None
        self._abort = False
        self._ping_deadline: float | None = None  # an unanswered keep-alive PING
        self._last_received = now  # for keep-alive PINGs: when the peer last sent anything
        self._resets = _RateWindow()
        self._pings = _RateWindow()
        self._settings = _RateWindow()
        self._empty_frames = _RateWindow()
        self._trailers: dict[int, Headers] = {}
        # The wire.
        self._out: list[bytes] = []
        self._inbuf: list[bytes] = []  # the start of an incomplete frame, in pieces
        self._inbuf_size = 0
        self._inbuf_needed = 0
        self._preface_pending = True
        self._first_frame_pending = True  # the peer's first frame must be SETTINGS
        self._block_stream = 0  # a header block in CONTINUATION frames is open on this stream
        self._block_fragments: list[bytes] = []
        self._block_size = 0
        self._block_continuations = 0
        self._block_end_stream = False
        self._block_self_dependent = False
        self._max_block_size = 2 * h2_limits.max_header_list_size + DEFAULT_MAX_FRAME_SIZE
        self._decoder = HeaderDecoder(h2_limits.max_header_list_size * 2)
        # Header blocks made only of one-byte indexed fields leave the HPACK table as it was,
        # so the same bytes decode (and parse) the same way until the next block that may
        # change the table bumps the generation. Clients repeat such blocks request after
        # request; these skip HPACK decoding and request validation.
        self._table_generation = 0
        self._block_cache: BoundedCache[bytes, _CachedBlock] = BoundedCache(_CACHED_BLOCKS)
        self._encoder = HeaderEncoder()
        # Until the peer acknowledges our SETTINGS it may assume the default stream window.
        self._local_settings_acked = False
        self._new_stream_window = max(DEFAULT_WINDOW, h2_limits.initial_stream_window_size)
        self._stream_credit_at = max(1, h2_limits.initial_stream_window_size // 2)
        connection_window = max(DEFAULT_WINDOW, h2_limits.initial_connection_window_size)
        self._recv_window = connection_window
        self._recv_unacked = 0
        self._connection_credit_at = connection_window // 2
        self._send_window = DEFAULT_WINDOW
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = DEFAULT_MAX_FRAME_SIZE
        self._initiate(upgrade_settings)

    def _initiate(self, upgrade_settings: bytes | None) -> None:
        limits = self._h2_limits
        if upgrade_settings is not None:
            # RFC 7540 3.2.1: the HTTP2-Settings header is the client's first SETTINGS.
            try:
                payload = base64.urlsafe_b64decode(
                    upgrade_settings + b"=" * (-len(upgrade_settings) % 4)
                )
                if len(payload) % 6:
                    raise _ConnectionError(
                        ErrorCode.PROTOCOL_ERROR, "HTTP2-Settings is not a SETTINGS payload"
                    )
                self._apply_settings(payload)
            except (binascii.Error, ValueError, _ConnectionError) as exc:
                error = (
                    exc
                    if isinstance(exc, _ConnectionError)
                    else _ConnectionError(ErrorCode.PROTOCOL_ERROR, f"bad HTTP2-Settings: {exc}")
                )
                self._fail(error)
                return
        # The peer learns our stream limit here; it is enforced by _start_stream, with
        # REFUSED_STREAM (RFC 9113 5.1.2).
        self._out.append(
            settings_frame(
                {
                    SETTINGS_MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                    SETTINGS_HEADER_TABLE_SIZE: limits.header_table_size,
                    SETTINGS_MAX_FRAME_SIZE: limits.max_frame_size,
                    SETTINGS_MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
                    SETTINGS_INITIAL_WINDOW_SIZE: limits.initial_stream_window_size,
                    SETTINGS_ENABLE_PUSH: 0,
                }
            )
        )
        extra = self._recv_window - DEFAULT_WINDOW
        if extra > 0:
            self._out.append(window_update_frame(0, extra))

    @classmethod
    def for_upgrade(
        cls,
        context: ServerContext,
        transport: TransportInfo,
        now: float,
        *,
        limits: Http2Limits,
        settings_header: bytes,
        request: HttpStream,
        body: bytes,
    ) -> Http2Protocol:
        """Take over after ``Upgrade: h2c``: the HTTP/1.1 request, already read in full,
        becomes stream 1 (RFC 7540 3.2)."""
        self = cls(context, transport, now, limits, upgrade_settings=settings_header)
        if self._closed:
            return self  # the HTTP2-Settings header was refused: GOAWAY, no stream
        self._highest_stream_id = 1
        self._wire[1] = _Wire(0, self._peer_initial_window, recv_closed=True)
        headers = [(n, v) for n, v in request.headers if n not in _UPGRADE_HOP_BY_HOP]
        stream = self._new_stream(
            1,
            method=request.method,
            scheme=request.scheme,
            raw_target=request.raw_target,
            raw_path=request.raw_path,
            path=request.path,
            path_base=request.path_base,
            query_string=request.query_string,
            headers=headers,
            content_length=request.request_content_length,
            has_body=False,
        )
        stream.remote_address = request.remote_address  # forwarded headers already applied
        if body:
            stream.body_arrived(body)
        self._running_apps += 1
        self._events.append(RequestReceived(stream))
        return self

    def _new_stream(
        self,
        stream_id: int,
        *,
        method: str,
        scheme: str,
        raw_target: bytes,
        raw_path: bytes,
        path: str,
        path_base: str,
        query_string: bytes,
        headers: Headers,
        content_length: int | None,
        has_body: bool,
    ) -> HttpStream:
        stream = HttpStream(
            self,
            stream_id,
            method=method,
            scheme=scheme,
            http_version="2",
            raw_target=raw_target,
            raw_path=raw_path,
            path=path,
            query_string=query_string,
            headers=headers,
            path_base=path_base,
            connection_id=self.connection_id,
            transport=self._transport,
            max_request_body_size=self._limits.max_request_body_size,
            request_content_length=content_length,
            has_body=has_body,
            expect_continue=False,
            start_time=self._now,
            wall_time=self._context.wall_time,
        )
        self._streams[stream_id] = stream
        self._idle_deadline = None
        return stream

    # -- adapter interface ----------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        self._now = now
        if self._closed:
            return self.pop_events()
        if not data:
            self._peer_gone()
            return self.pop_events()
        self._last_received = now
        if type(data) is not bytes:
            data = bytes(data)  # a bytearray or memoryview from the transport: bodies are bytes
        try:
            self._receive(data)
        except _ConnectionError as error:
            self._fail(error)
            return self.pop_events()
        self._flush()
        return self.pop_events()

    # -- frames in ------------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        if self._inbuf:
            # The rest of a frame (or the preface) that did not arrive whole: gathered in
            # pieces and joined once it is complete, so a large frame arriving in many reads
            # costs one copy, not one per read.
            pieces = self._inbuf
            pieces.append(data)
            self._inbuf_size += len(data)
            if self._inbuf_size < self._inbuf_needed and not self._preface_pending:
                return
            data = b"".join(pieces)
            self._inbuf = []
        position = 0
        if self._preface_pending:
            if len(data) < len(PREFACE):
                if not PREFACE.startswith(data):
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "invalid connection preface")
                self._keep(data, len(PREFACE))
                return
            if not data.startswith(PREFACE):
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "invalid connection preface")
            self._preface_pending = False
            position = len(PREFACE)
        end = len(data)
        unpack = FRAME_HEADER.unpack_from
        max_frame = self._h2_limits.max_frame_size
        needed = 9
        while end - position >= 9:
            high, low, kind, flags, stream_id = unpack(data, position)
            length = high << 16 | low
            if length > max_frame:
                raise _ConnectionError(
                    ErrorCode.FRAME_SIZE_ERROR,
                    f"a frame of {length} bytes is over SETTINGS_MAX_FRAME_SIZE ({max_frame})",
                )
            start = position + 9
            if start + length > end:
                needed = 9 + length
                break
            position = start + length
            self._frame(kind, flags, stream_id & MAX_WINDOW, data[start:position])
            if self._closed:  # a limit tripped: the rest of what was read is ignored
                return
        if position < end:
            self._keep(data[position:] if position else data, needed)

    def _keep(self, rest: bytes, needed: int) -> None:
        """Bytes of an incomplete frame; nothing is parsed until ``needed`` have arrived."""
        self._inbuf = [rest]
        self._inbuf_size = len(rest)
        self._inbuf_needed = needed

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block_stream:
            if kind != CONTINUATION or stream_id != self._block_stream:
                raise _ConnectionError(
                    ErrorCode.PROTOCOL_ERROR,
                    "a header block was interrupted by another frame (RFC 9113 6.10)",
                )
            self._continuation(flags, payload)
            return
        if self._first_frame_pending:
            if kind != SETTINGS or flags & ACK:
                raise _ConnectionError(
                    ErrorCode.PROTOCOL_ERROR, "the client's first frame must be SETTINGS"
                )
            self._first_frame_pending = False
        if kind == HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif kind == DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif kind == PING:
            self._on_ping(flags, stream_id, payload)
        elif kind == RST_STREAM:
            self._on_rst_stream(stream_id, payload)
        elif kind == PRIORITY:
            if len(payload) != 5:
                raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY must be 5 bytes")
            if not stream_id:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
            if unpack_u32(payload) & MAX_WINDOW == stream_id:
                self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR)
        elif kind == GOAWAY:
            self._on_goaway(stream_id, payload)
        elif kind == CONTINUATION:
            raise _ConnectionError(
                ErrorCode.PROTOCOL_ERROR, "CONTINUATION without a HEADERS frame before it"
            )
        elif kind == PUSH_PROMISE:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "a client sent PUSH_PROMISE")
        # Frames of unknown types are ignored (RFC 9113 5.5).

    def _is_idle(self, stream_id: int) -> bool:
        """Never opened: above every stream the client opened, or one only a server opens."""
        return stream_id > self._highest_stream_id or not stream_id & 1

    @staticmethod
    def _unpad(payload: bytes) -> bytes:
        if not payload:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "padded frame without a pad length")
        padding = payload[0]
        if padding >= len(payload):
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1 : len(payload) - padding]

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & PADDED:
            payload = self._unpad(payload)
        self_dependent = False
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise _ConnectionError(
                    ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its priority fields"
                )
            self_dependent = unpack_u32(payload) & MAX_WINDOW == stream_id
            payload = payload[5:]
        if flags & END_HEADERS:
            self._header_block(stream_id, payload, bool(flags & END_STREAM), self_dependent)
            return
        self._block_stream = stream_id
        self._block_fragments = [payload]
        self._block_size = len(payload)
        self._block_continuations = 0
        self._block_end_stream = bool(flags & END_STREAM)
        self._block_self_dependent = self_dependent

    def _continuation(self, flags: int, payload: bytes) -> None:
        self._block_continuations += 1
        self._block_size += len(payload)
        if self._block_size > self._max_block_size:
            raise _ConnectionError(
                ErrorCode.ENHANCE_YOUR_CALM, "header block too large", "h2_flood"
            )
        if self._block_continuations > _MAX_CONTINUATIONS:
            raise _ConnectionError(
                ErrorCode.ENHANCE_YOUR_CALM, "too many CONTINUATION frames", "h2_flood"
            )
        self._block_fragments.append(payload)
        if flags & END_HEADERS:
            stream_id = self._block_stream
            block = b"".join(self._block_fragments)
            self._block_stream = 0
            self._block_fragments = []
            self._header_block(stream_id, block, self._block_end_stream, self._block_self_dependent)

    def _header_block(
        self, stream_id: int, block: bytes, end_stream: bool, self_dependent: bool
    ) -> None:
        # Decoded first, whatever becomes of the stream: the HPACK state must stay in step.
        cached = self._block_cache.get(block)
        if cached is not None and cached.generation == self._table_generation:
            self._request_block(stream_id, end_stream, self_dependent, cached)
            return
        try:
            headers = self._decoder.decode(block)
        except HeaderListTooLarge as exc:
            raise _ConnectionError(
                ErrorCode.ENHANCE_YOUR_CALM, f"header list too large: {exc}", "h2_flood"
            ) from None
        except HpackError as exc:
            raise _ConnectionError(
                ErrorCode.COMPRESSION_ERROR, f"undecodable header block: {exc}"
            ) from None
        cached = _CachedBlock(self._table_generation, headers)
        if len(block) <= _CACHED_BLOCK_SIZE and _INDEXED_ONLY.fullmatch(block):
            self._block_cache.remember(block, cached)
        else:
            self._table_generation += 1  # the table may have changed: older entries are stale
        self._request_block(stream_id, end_stream, self_dependent, cached)

    def _request_block(
        self, stream_id: int, end_stream: bool, self_dependent: bool, block: _CachedBlock
    ) -> None:
        """A decoded header block: a new request, or trailers."""
        wire = self._wire.get(stream_id)
        if wire is not None:  # trailers
            if wire.recv_closed:  # half-closed (remote): RFC 9113 5.1
                self._stream_error(stream_id, ErrorCode.STREAM_CLOSED)
            elif not end_stream:
                self._malformed(stream_id, "a second HEADERS frame without END_STREAM")
            elif wire.expected_length not in (None, wire.received_length):
                self._malformed(stream_id, "body shorter than its content-length")
            else:
                self._remote_end(stream_id, wire)
            return
        if not stream_id & 1:
            raise _ConnectionError(
                ErrorCode.PROTOCOL_ERROR, f"HEADERS on stream {stream_id}: client streams are odd"
            )
        if stream_id <= self._highest_stream_id:
            if stream_id in self._reset_by_us:
                return  # trailers of a stream we reset: ignored (RFC 9113 5.1)
            raise _ConnectionError(
                ErrorCode.PROTOCOL_ERROR,
                f"HEADERS on stream {stream_id}, not above the last stream opened "
                f"({self._highest_stream_id})",
            )
        self._highest_stream_id = stream_id
        self._wire[stream_id] = _Wire(
            self._new_stream_window, self._peer_initial_window, end_stream
        )
        if self_dependent:
            self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR)
            return
        self._start_stream(stream_id, block, end_stream)

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        length = len(payload)
        data = self._unpad(payload) if flags & PADDED else payload
        self._recv_window -= length
        if self._recv_window < 0:
            raise _ConnectionError(
                ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection's flow-control window"
            )
        wire = self._wire.get(stream_id)
        if wire is None:
            if self._is_idle(stream_id):
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            self._credit_connection(length)
            if stream_id not in self._reset_by_us:
                self._stream_error(stream_id, ErrorCode.STREAM_CLOSED)
            return
        if wire.recv_closed:
            self._credit_connection(length)
            self._stream_error(stream_id, ErrorCode.STREAM_CLOSED)
            return
        wire.recv_window -= length
        if wire.recv_window < 0:
            raise _ConnectionError(
                ErrorCode.FLOW_CONTROL_ERROR,
                f"DATA beyond stream {stream_id}'s flow-control window",
            )
        ended = flags & END_STREAM
        expected = wire.expected_length
        if expected is not None:
            received = wire.received_length = wire.received_length + len(data)
            if received > expected or (ended and received != expected):
                self._credit_connection(length)
                self._malformed(
                    stream_id, f"body of {received}+ bytes, content-length says {expected}"
                )
                return
        self._data_received(stream_id, data, length)
        if ended and not self._closed:
            self._remote_end(stream_id, wire)

    def _remote_end(self, stream_id: int, wire: _Wire) -> None:
        wire.recv_closed = True
        if wire.send_closed:
            del self._wire[stream_id]
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.body_complete_flag = True
            self._wake(stream)
            self._maybe_retire(stream_id)

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE must be 4 bytes")
        increment = unpack_u32(payload) & MAX_WINDOW
        if not stream_id:
            if not increment:
                raise _ConnectionError(
                    ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection"
                )
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise _ConnectionError(
                    ErrorCode.FLOW_CONTROL_ERROR, "connection window over 2^31-1"
                )
            return  # _flush after the batch sends whatever the new window allows
        wire = self._wire.get(stream_id)
        if wire is None:
            if self._is_idle(stream_id):
                raise _ConnectionError(
                    ErrorCode.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}"
                )
            return  # closed: a late update, harmless
        if not increment:
            self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR)
            return
        wire.send_window += increment
        if wire.send_window > MAX_WINDOW:
            self._stream_error(stream_id, ErrorCode.FLOW_CONTROL_ERROR)

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            self._local_settings_take_effect()
            return
        if len(payload) % 6:
            raise _ConnectionError(
                ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length is not a multiple of 6"
            )
        self._apply_settings(payload)
        self._out.append(_SETTINGS_ACK)
        if self._settings.hit(self._now) > self._h2_limits.max_settings_per_second:
            self._calm_down("SETTINGS flood")

    def _apply_settings(self, payload: bytes) -> None:
        for code, value in parse_settings(payload):
            if code == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise _ConnectionError(
                        ErrorCode.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1"
                    )
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                if delta:
                    for wire in self._wire.values():
                        wire.send_window += delta
                        if wire.send_window > MAX_WINDOW:
                            raise _ConnectionError(
                                ErrorCode.FLOW_CONTROL_ERROR, "a stream window over 2^31-1"
                            )
            elif code == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_MAX_FRAME_SIZE <= value <= 16_777_215:
                    raise _ConnectionError(
                        ErrorCode.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE of {value}"
                    )
                self._peer_max_frame = value
            elif code == SETTINGS_HEADER_TABLE_SIZE:
                self._encoder.set_max_table_size(value)
            elif code in (SETTINGS_ENABLE_PUSH, SETTINGS_ENABLE_CONNECT_PROTOCOL) and value > 1:
                raise _ConnectionError(
                    ErrorCode.PROTOCOL_ERROR, f"SETTINGS {code:#x} must be 0 or 1"
                )

    def _local_settings_take_effect(self) -> None:
        """The peer acknowledged our SETTINGS: our stream window and table size now hold."""
        if self._local_settings_acked:
            return
        self._local_settings_acked = True
        configured = self._h2_limits.initial_stream_window_size
        delta = configured - self._new_stream_window
        self._new_stream_window = configured
        if delta:
            for wire in self._wire.values():
                wire.recv_window += delta
        self._decoder.max_allowed_table_size = self._h2_limits.header_table_size
        self._table_generation += 1  # decoding checks the table size against the new limit

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 8:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PING must be 8 bytes")
        if stream_id:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
        if flags & ACK:
            self._ping_deadline = None
            return
        self._out.append(frame(PING, ACK, 0, payload))
        if self._pings.hit(self._now) > self._h2_limits.max_pings_per_second:
            self._calm_down("PING flood")

    def _on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM must be 4 bytes")
        if not stream_id:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if self._wire.pop(stream_id, None) is None:
            if self._is_idle(stream_id):
                raise _ConnectionError(
                    ErrorCode.PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}"
                )
            return  # already closed
        self._reset_seen(self._now)
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.response_complete:
            stream.aborted_flag = True
            self._wake(stream)
        self._drop_output(stream_id)
        self._maybe_retire(stream_id)

    def _on_goaway(self, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
        _, code = unpack_goaway(payload)
        if code == ErrorCode.NO_ERROR and self._streams:
            # The peer opens no more streams (RFC 9113 6.8); those in flight finish, and
            # the connection closes once they have (as after our own graceful GOAWAY).
            self._goaway(ErrorCode.NO_ERROR)
        else:
            self._peer_gone()

    # -- requests -----------------------------------------------------------------------------

    def _start_stream(self, stream_id: int, block: _CachedBlock, ended: bool) -> None:
        if self._shutting_down or self._goaway_sent:
            self._reset_id(stream_id, ErrorCode.REFUSED_STREAM)
            return
        if self._running_apps >= self._h2_limits.max_concurrent_streams:
            self._reset_id(stream_id, ErrorCode.REFUSED_STREAM)
            self._record(None, "h2_refused_stream", "too many concurrent streams")
            self._reset_seen(self._now)
            return
        try:
            request = block.request
            if request is None:
                request = block.request = _parse_request(
                    block.headers,
                    self._transport.scheme,
                    self._limits,
                    allow_alternate_schemes=self._context.config.allow_alternate_schemes,
                )
            if ended and request.content_length:
                raise _Malformed("content-length without a body")
        except _Malformed as exc:
            self._reset_id(stream_id, ErrorCode.PROTOCOL_ERROR)
            self._record(None, "h2_malformed_request", f"malformed request: {exc}")
            self._reset_seen(self._now)
            return
        self._wire[stream_id].expected_length = request.content_length
        root = self._context.config.root_path
        path = request.path
        path_base = ""
        if root and (matched := match_path_base(path, root)) is not None:
            path_base, path = matched, path[len(matched) :]
        stream = self._new_stream(
            stream_id,
            method=request.method,
            scheme=request.scheme,
            raw_target=request.target,
            raw_path=request.raw_path,
            path=path,
            path_base=path_base,
            query_string=request.query_string,
            headers=list(request.headers),
            content_length=request.content_length,
            has_body=not ended,
        )
        status, reason, message = request.error_status, request.error_reason, request.error_message
        token = self._context.config.pairing_token
        if token is not None and status is None and (refusal := check_pairing_token(stream, token)):
            status, reason, message = refusal.status, refusal.reason, str(refusal)
        forwarded = self._context.config.forwarded
        if (
            forwarded is not None
            and status is None
            and (refusal := apply_forwarded(stream, forwarded))
        ):
            status, reason, message = refusal.status, refusal.reason, str(refusal)
        if status is not None:
            # Limits that HTTP/1.1 answers with a status get the same status here; no app runs.
            self._record(status, reason, message)
            self._finished.add(stream_id)
            self._answer_error(stream, status, message)
            return
        self._running_apps += 1
        cache = self._context.response_cache
        if cache is not None and cache.try_serve(stream, self._now):
            return
        self._events.append(RequestReceived(stream))

    def _data_received(self, stream_id: int, data: bytes, length: int) -> None:
        self._credit_connection(length)
        stream = self._streams.get(stream_id)
        if (
            not data
            and self._empty_frames.hit(self._now) > self._h2_limits.max_empty_frames_per_second
        ):
            self._calm_down("empty DATA frame flood")
            return
        if stream is None or stream.aborted_flag or stream.response_complete:
            # Nobody will read these bytes: give the stream's credit back at once.
            self._credit_stream(stream_id, length)
            return
        stream.body_arrived(data)
        padding = length - len(data)
        if padding:
            self._credit_stream(stream_id, padding)
        limit = stream.max_request_body_size
        if stream.read_started and limit is not None and stream.body_received > limit:
            self._body_too_large(stream, limit)
            return
        self._wake(stream)

    def _body_too_large(self, stream: HttpStream, limit: int) -> None:
        message = f"request body larger than the limit of {limit} bytes"
        self._record(413, "body_too_large", message)
        if not stream.response_started:
            self._answer_error(stream, 413, message)
        else:
            self._reset_stream(stream, ErrorCode.CANCEL)
        stream.aborted_flag = True
        self._wake(stream)

    # -- flow control (inbound) ------------------------------------------------------------------

    def _credit_connection(self, size: int) -> None:
        if size:
            unacked = self._recv_unacked + size
            if unacked >= self._connection_credit_at:
                self._out.append(window_update_frame(0, unacked))
                self._recv_window += unacked
                unacked = 0
            self._recv_unacked = unacked

    def _credit_stream(self, stream_id: int, size: int) -> None:
        if not size:
            return
        wire = self._wire.get(stream_id)
        if wire is None or wire.recv_closed:
            return  # nothing more comes on this stream: no credit needed
        unacked = wire.recv_unacked + size
        if unacked >= self._stream_credit_at:
            self._out.append(window_update_frame(stream_id, unacked))
            wire.recv_window += unacked
            unacked = 0
        wire.recv_unacked = unacked

    # -- stream owner interface (called through HttpStream) -----------------------------------

    def stream_read_started(self, stream: HttpStream, now: float | None) -> None:
        if now is not None:
            self._now = now
        limit = stream.max_request_body_size
        length = stream.request_content_length
        if limit is not None and (
            (length is not None and length > limit) or stream.body_received > limit
        ):
            self._body_too_large(stream, limit)

    def stream_body_consumed(self, stream: HttpStream, now: float | None) -> None:
        if now is not None:
            self._now = now
        credited = self._credited.get(stream.stream_id, 0)
        consumed = stream.body_received - credited
        if consumed > 0:
            self._credited[stream.stream_id] = stream.body_received
            self._credit_stream(stream.stream_id, consumed)

    def stream_can_write(self, stream: HttpStream) -> bool:
        if stream.aborted_flag:
            return True  # let the write raise ClientDisconnected instead of waiting forever
        buffer = self._send_buffers.get(stream.stream_id)
        return buffer is None or len(buffer) < (self._limits.max_response_buffer_size or 1 << 62)

    def stream_abort(self, stream: HttpStream) -> None:
        if self._streams.get(stream.stream_id) is stream:
            self._reset_stream(stream, ErrorCode.INTERNAL_ERROR)
            self._record(None, "aborted_by_app", "the app aborted the request")
        self._wake(stream)

    def stream_can_transmit_file(self, stream: HttpStream) -> bool:
        return False  # DATA frames carry the bytes: files go through the read loop

    def stream_transmit_file(
        self, stream: HttpStream, segment: FileSegment, end: bool, now: float | None
    ) -> None:
        raise LocalProtocolError("HTTP/2 cannot send a file raw; write its bytes instead")

    def stream_file_transmitted(self, stream: HttpStream, now: float | None) -> None:
        raise LocalProtocolError("HTTP/2 never hands out a file to send")

    def stream_finished(self, stream: HttpStream) -> None:
        """The app is done with this stream (it returned or raised)."""
        self._running_apps -= 1
        self._finished.add(stream.stream_id)
        self._maybe_retire(stream.stream_id)

    def stream_informational(self, stream: HttpStream, status: int, headers: Headers) -> None:
        validate_response_headers(headers)
        block = [(b":status", _STATUS_CODES[status])]
        block += [(n.lower(), v) for n, v in headers if n.lower() not in _NOT_IN_RESPONSES]
        self._send_headers(stream.stream_id, block, end_stream=False)

    def stream_send(
        self,
        stream: HttpStream,
        data: bytes,
        end: bool,
        now: float | None,
        trailers: Headers | None = None,
    ) -> None:
        if now is not None:
            self._now = now
        stream_id = stream.stream_id
        if trailers:
            validate_response_headers(trailers)
            self._trailers[stream_id] = [
                (n.lower(), v) for n, v in trailers if n.lower() not in _NOT_IN_RESPONSES
            ]
        ended_with_head = False
        if not stream.response_started:
            ended_with_head = self._send_head(stream, data, end and not trailers)
        elif data and stream.body_allowed:
            self._send_buffers.setdefault(stream_id, bytearray()).extend(data)
            stream.bytes_sent += len(data)
        if end:
            if not ended_with_head:  # the head (and body) already ended the stream
                self._ending.add(stream_id)
            stream.response_complete = True
            self._context.observer.response_completed(stream)
            stream.run_on_completed()
            self._wake(stream)
        if self._send_buffers or self._ending:
            self._flush()

    def _send_head(self, stream: HttpStream, data: bytes, end: bool) -> bool:
        """Send the response head; True when it also ended the stream (with the body, when
        the whole body fits the windows and one frame)."""
        stream.begin_response()
        status = stream.status
        headers: Headers = [(b":status", _STATUS_CODES[status])]
        has_date = has_server = has_length = False
        for name, value in stream.response_headers:
            lowered = name.lower()
            if lowered in _NOT_IN_RESPONSES:
                continue  # meaningless in HTTP/2 and forbidden on the wire (RFC 9113 8.2.2)
            if lowered == b"date":
                has_date = True
            elif lowered == b"server":
                has_server = True
            elif lowered == b"content-length":
                has_length = True
            headers.append((lowered, value))
        if not has_date:
            headers.append((b"date", self._context.date.value))
        if not has_server and self._context.server_header:
            headers.append((b"server", self._context.server_header))
        body_allowed = stream.body_allowed
        if end and not has_length and body_allowed:
            headers.append((b"content-length", str(len(data)).encode()))
        stream.response_started = True
        stream_id = stream.stream_id
        end_now = end and (not data or not body_allowed)
        if not data or not body_allowed:
            self._send_headers(stream_id, headers, end_stream=end_now)
            if end_now:
                self._stream_output_done(stream_id)
            return end_now
        stream.bytes_sent += len(data)
        wire = self._wire.get(stream_id)
        size = len(data)
        if (
            end
            and wire is not None
            and size <= self._send_window
            and size <= wire.send_window
            and size <= self._peer_max_frame
        ):
            # The common case: head and whole body in two frames, no buffering.
            self._send_headers(stream_id, headers, end_stream=False)
            self._send_window -= size
            wire.send_window -= size
            self._out += (frame_header(size, DATA, END_STREAM, stream_id), data)
            self._local_end(stream_id, wire)
            self._stream_output_done(stream_id)
            return True
        self._send_headers(stream_id, headers, end_stream=False)
        self._send_buffers.setdefault(stream_id, bytearray()).extend(data)
        return False

    def _answer_error(self, stream: HttpStream, status: int, message: str) -> None:
        body = f"{status} {message}\n".encode()
        headers: Headers = [
            (b":status", _STATUS_CODES[status]),
            (b"date", self._context.date.value),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        if status == 405:
            headers.append((b"allow", ALLOW_ALL_BUT_CONNECT))
        stream.status = status
        stream.response_started = True
        stream.response_complete = True
        self._send_headers(stream.stream_id, headers, end_stream=False)
        self._send_buffers.setdefault(stream.stream_id, bytearray()).extend(body)
        self._ending.add(stream.stream_id)
        self._flush()

    # -- frames out ---------------------------------------------------------------------------

    def _send_headers(self, stream_id: int, headers: Headers, end_stream: bool) -> None:
        wire = self._wire.get(stream_id)
        if wire is None or wire.send_closed:
            return  # the stream is gone (reset): nothing more goes out on it
        block = self._encoder.encode(headers)
        flags = END_STREAM if end_stream else 0
        limit = self._peer_max_frame
        out = self._out
        if len(block) <= limit:
            out += (frame_header(len(block), HEADERS, flags | END_HEADERS, stream_id), block)
        else:
            out += (frame_header(limit, HEADERS, flags, stream_id), block[:limit])
            for start in range(limit, len(block), limit):
                piece = block[start : start + limit]
                last = END_HEADERS if start + limit >= len(block) else 0
                out += (frame_header(len(piece), CONTINUATION, last, stream_id), piece)
        if end_stream:
            self._local_end(stream_id, wire)

    def _local_end(self, stream_id: int, wire: _Wire) -> None:
        wire.send_closed = True
        if wire.recv_closed:
            del self._wire[stream_id]

    def _send_reset(self, stream_id: int, code: ErrorCode) -> None:
        self._out.append(rst_stream_frame(stream_id, code))
        self._wire.pop(stream_id, None)
        remembered = self._reset_by_us
        remembered[stream_id] = None
        if len(remembered) > _RESET_MEMORY:
            del remembered[next(iter(remembered))]

    def _stream_error(self, stream_id: int, code: ErrorCode) -> None:
        """RFC 9113 5.4.2: RST_STREAM; the stream's app, if any, sees it aborted."""
        self._send_reset(stream_id, code)
        self._reset_seen(self._now)
        stream = self._streams.get(stream_id)
        if stream is not None:
            if not stream.response_complete:
                stream.aborted_flag = True
            self._wake(stream)
            self._drop_output(stream_id)
            self._maybe_retire(stream_id)

    def _malformed(self, stream_id: int, message: str) -> None:
        """RFC 9113 8.1.1: a malformed request is a stream error of its own."""
        self._send_reset(stream_id, ErrorCode.PROTOCOL_ERROR)
        self._reset_seen(self._now)
        self._record(None, "h2_malformed_request", f"malformed request: {message}")
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.aborted_flag = True
            self._wake(stream)
        self._drop_output(stream_id)
        self._maybe_retire(stream_id)

    # -- flow control (outbound) -------------------------------------------------------------

    def _flush(self) -> None:
        """Move buffered response bytes into DATA frames as the windows allow, round-robin."""
        if self._closed:
            return
        buffers = self._send_buffers
        progress = True
        while progress and buffers:
            progress = False
            for stream_id in list(buffers):
                buffer = buffers[stream_id]
                if buffer:
                    wire = self._wire.get(stream_id)
                    if wire is None or wire.send_closed:
                        self._drop_output(stream_id)
                        continue
                    size = min(
                        self._send_window, wire.send_window, self._peer_max_frame, len(buffer)
                    )
                    if size <= 0:
                        if stream_id not in self._blocked_since:
                            self._blocked_since[stream_id] = (
                                self._now,
                                self._flushed.get(stream_id, 0),
                            )
                        continue
                    chunk = bytes(buffer[:size])
                    del buffer[:size]
                    last = not buffer and stream_id in self._ending
                    end_flag = END_STREAM if last and stream_id not in self._trailers else 0
                    self._out += (frame_header(size, DATA, end_flag, stream_id), chunk)
                    self._send_window -= size
                    wire.send_window -= size
                    if end_flag:
                        self._local_end(stream_id, wire)
                    elif last:
                        self._send_headers(stream_id, self._trailers.pop(stream_id), True)
                    self._flushed[stream_id] = self._flushed.get(stream_id, 0) + size
                    if not buffer:
                        self._blocked_since.pop(stream_id, None)
                    progress = True
                    stream = self._streams.get(stream_id)
                    if stream is not None and len(buffer) < (
                        self._limits.max_response_buffer_size or 1
                    ):
                        self._wake(stream)
                    if last:
                        self._ending.discard(stream_id)
                        self._stream_output_done(stream_id)
                elif stream_id in self._ending:
                    self._end_stream(stream_id)
                    progress = True
        if self._ending:
            for stream_id in list(self._ending):
                if stream_id not in buffers:
                    self._end_stream(stream_id)

    def _end_stream(self, stream_id: int) -> None:
        trailers = self._trailers.pop(stream_id, None)
        if trailers:
            self._send_headers(stream_id, trailers, end_stream=True)
        else:
            wire = self._wire.get(stream_id)
            if wire is not None and not wire.send_closed:
                self._out.append(frame_header(0, DATA, END_STREAM, stream_id))
                self._local_end(stream_id, wire)
        self._ending.discard(stream_id)
        self._stream_output_done(stream_id)

    def _stream_output_done(self, stream_id: int) -> None:
        self._send_buffers.pop(stream_id, None)
        self._blocked_since.pop(stream_id, None)
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.body_complete_flag:
            # RFC 9113 8.1: the response is complete; the rest of the request is not needed.
            self._reset_stream(stream, ErrorCode.NO_ERROR)
        self._maybe_retire(stream_id)

    def _drop_output(self, stream_id: int) -> None:
        self._trailers.pop(stream_id, None)
        self._flushed.pop(stream_id, None)
        self._send_buffers.pop(stream_id, None)
        self._blocked_since.pop(stream_id, None)
        self._ending.discard(stream_id)

    def _reset_stream(self, stream: HttpStream, code: ErrorCode) -> None:
        if stream.stream_id in self._wire:
            self._send_reset(stream.stream_id, code)
        if not stream.response_complete and code != ErrorCode.NO_ERROR:
            stream.aborted_flag = True
        self._drop_output(stream.stream_id)

    def _maybe_retire(self, stream_id: int) -> None:
        """Forget a stream once its app let go and nothing more goes out on it."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if stream_id not in self._finished:
            return
        output_done = stream_id not in self._send_buffers and stream_id not in self._ending
        if (stream.response_complete and output_done) or stream.aborted_flag:
            del self._streams[stream_id]
            self._flushed.pop(stream_id, None)
            self._finished.discard(stream_id)
            self._credited.pop(stream_id, None)
            if not self._streams:
                if self._shutting_down or self._goaway_sent:
                    self._close_after_flush()
                else:
                    self._idle_deadline = self._now + self._limits.keep_alive_timeout

    # -- timers -------------------------------------------------------------------------------

    def on_timer(self, now: float) -> list[Event]:
        self._now = now
        if self._closed:
            if self._write_deadline is not None and now >= self._write_deadline:
                self._abort = True  # even the last flush of a closed connection is bounded
            return self.pop_events()
        if self._idle_deadline is not None and now >= self._idle_deadline:
            self._goaway(ErrorCode.NO_ERROR)
            self._close_after_flush()
            return self.pop_events()
        if self._ping_deadline is not None and now >= self._ping_deadline:
            self._goaway(ErrorCode.NO_ERROR)
            self._record(None, "h2_ping_timeout", "keep-alive PING was not answered in time")
            self._abort_all()
            return self.pop_events()
        ping_at = self._next_ping()
        if ping_at is not None and now >= ping_at:
            # Silence for keep_alive_ping_delay: ask the peer whether it is still there.
            self._out.append(_KEEP_ALIVE_PING)
            self._ping_deadline = now + self._h2_limits.keep_alive_ping_timeout
        rate = self._limits.min_response_data_rate
        if rate is not None:
            for stream_id in list(self._blocked_since):
                if now >= self._stall_deadline(stream_id, rate):
                    stream = self._streams.get(stream_id)
                    if stream is not None:
                        self._record(None, "response_data_rate", "flow-control window stalled")
                        self._reset_stream(stream, ErrorCode.CANCEL)
                        self._wake(stream)
                        self._maybe_retire(stream_id)
        if self._write_deadline is not None and now >= self._write_deadline and not self._abort:
            self._record(None, "response_data_rate", "the client read the response too slowly")
            self._abort = True
            self._abort_all()
        self._flush()
        return self.pop_events()

    def next_deadline(self) -> float | None:
        if self._closed:
            return None if self._abort else self._write_deadline
        deadline = self._idle_deadline
        for other in (self._ping_deadline, self._write_deadline, self._next_ping()):
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        rate = self._limits.min_response_data_rate
        if rate is not None and self._blocked_since:
            for stream_id in self._blocked_since:
                other = self._stall_deadline(stream_id, rate)
                if deadline is None or other < deadline:
                    deadline = other
        return deadline

    def _next_ping(self) -> float | None:
        delay = self._h2_limits.keep_alive_ping_delay
        if delay is None or self._ping_deadline is not None or self._goaway_sent:
            return None
        return self._last_received + delay

    def _stall_deadline(self, stream_id: int, rate: DataRate) -> float:
        """A stream held back by flow control must still average the minimum response rate
        over the time it has been held back (after the grace period), counting only bytes that
        really went out: a zero window, or one opened a byte at a time, ends in a reset."""
        since, sent_before = self._blocked_since[stream_id]
        sent = self._flushed.get(stream_id, 0) - sent_before
        return since + max(rate.grace_period, sent / rate.bytes_per_second)

    def set_write_blocked(self, blocked: bool, now: float, buffered: int = 0) -> None:
        self._now = now
        rate = self._limits.min_response_data_rate
        if not blocked or rate is None:
            self._write_deadline = None
        elif self._write_deadline is None:
            self._write_deadline = now + max(rate.grace_period, buffered / rate.bytes_per_second)

    # -- output and lifecycle ---------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = b"".join(out)
        out.clear()
        return data

    def flush(self) -> Flush:
        events: list[Event] | tuple[Event, ...] = self._events
        if events:
            self._events = []
        else:
            events = NO_EVENTS
        if self._abort:
            return events, b"", ABORT, self.next_deadline()
        data = self.data_to_send()
        return events, data, CLOSE if self._closed else KEEP_READING, self.next_deadline()

    def pop_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    @property
    def wants_read(self) -> bool:
        return not self._closed

    @property
    def should_close(self) -> bool:
        return self._closed

    @property
    def should_abort(self) -> bool:
        return self._abort

    @property
    def is_idle(self) -> bool:
        return not self._streams

    def shutdown(self, now: float) -> list[Event]:
        """Graceful stop: GOAWAY with the last stream id, finish what is in flight, close."""
        self._now = now
        if not self._shutting_down:
            self._shutting_down = True
            self._goaway(ErrorCode.NO_ERROR)
            if not self._streams:
                self._close_after_flush()
        return self.pop_events()

    def connection_lost(self, now: float) -> list[Event]:
        self._now = now
        self._closed = True
        self._abort_all()
        return self.pop_events()

    def _goaway(self, code: ErrorCode) -> None:
        """GOAWAY naming the last stream we took. After NO_ERROR the streams in flight
        finish (new ones are refused by _start_stream); after an error the caller closes."""
        error = code != ErrorCode.NO_ERROR
        if self._goaway_sent and (self._goaway_error or not error):
            return  # a graceful GOAWAY may still be followed by one that names an error
        self._goaway_sent = True
        self._goaway_error = error
        self._out.append(goaway_frame(self._highest_stream_id, code))

    def _reset_id(self, stream_id: int, code: ErrorCode) -> None:
        self._send_reset(stream_id, code)

    def _close_after_flush(self) -> None:
        self._closed = True

    def _peer_gone(self) -> None:
        self._closed = True
        self._abort_all()

    def _abort_all(self) -> None:
        for stream in self._streams.values():
            if not stream.response_complete or stream.stream_id in self._send_buffers:
                stream.aborted_flag = True
                self._wake(stream)
        self._send_buffers.clear()
        self._ending.clear()
        self._blocked_since.clear()
        self._closed = True

    def _fail(self, error: _ConnectionError) -> None:
        """A connection error: GOAWAY with its code, and the connection ends."""
        self._goaway(error.code)
        self._record(None, error.reason, f"HTTP/2 protocol error: {error}")
        self._abort_all()

    def _calm_down(self, what: str) -> None:
        self._goaway(ErrorCode.ENHANCE_YOUR_CALM)
        self._record(None, "h2_flood", f"{what}: GOAWAY ENHANCE_YOUR_CALM")
        self._abort_all()

    def _reset_seen(self, now: float) -> None:
        if self._resets.hit(now) > self._h2_limits.max_resets_per_second:
            self._calm_down("too many stream resets (rapid reset)")

    def _wake(self, stream: HttpStream) -> None:
        events = self._events
        if not events or events[-1].stream is not stream:
            events.append(StreamUpdated(stream))

    def _record(self, status: int | None, reason: str, message: str) -> None:
        self._context.record_rejection(
            Rejection(
                status=status,
                reason=reason,
                message=escape_for_log(message),
                remote_address=self._transport.remote_address,
                connection_id=self.connection_id,
            )
        )


# -- request validation (RFC 9113 8.2-8.3) -----------------------------------------------------


class _Malformed(Exception):
    pass


@dataclass(slots=True)
class _Request:
    method: str
    scheme: str
    target: bytes
    raw_path: bytes
    path: str
    query_string: bytes
    headers: Headers
    content_length: int | None
    error_status: int | None = None
    error_reason: str = ""
    error_message: str = ""


# What _check_field accepts, as two expressions, so a good field costs two C-level matches:
# lower-case token characters (after any leading colons), and a value without CR, LF, NUL or
# surrounding whitespace.
_GOOD_NAME = re.compile(rb":*[!#$%&'*+\-.^_`|~0-9a-z]+|:+")
# Controls, space, DEL, non-ASCII and '#' have no place in a request target.
_BAD_PATH_BYTE = re.compile(rb"[\x00-\x20\x7f-\xff#]")
_GOOD_VALUE = re.compile(rb"(?![ \t])[^\r\n\x00]*(?<![ \t])")


def _check_field(name: bytes, value: bytes) -> None:
    if _GOOD_NAME.fullmatch(name) and _GOOD_VALUE.fullmatch(value):
        return
    # Which rule failed, for the log.
    if not name or name != name.lower():
        raise _Malformed("header names must be lower-case")
    for byte in name.lstrip(b":"):
        if byte <= 0x20 or byte >= 0x7F or byte in b'()<>@,;:\\"/[]?={}':
            raise _Malformed("invalid character in a header name")
    if b"\r" in value or b"\n" in value or b"\x00" in value:
        raise _Malformed("CR, LF or NUL in a header value")
    if value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
        raise _Malformed("whitespace around a header value")
    raise _Malformed("invalid header field")


def _parse_request(
    raw: Headers, transport_scheme: str, limits: Any, *, allow_alternate_schemes: bool = False
) -> _Request:
    pseudo: dict[bytes, bytes] = {}
    headers: Headers = []
    cookies: list[bytes] = []
    content_length: int | None = None
    total = 0
    regular_seen = False
    for name, value in raw:
        _check_field(name, value)
        total += len(name) + len(value) + 32
        if name.startswith(b":"):
            if regular_seen:
                raise _Malformed("pseudo-header after a regular header")
            if name not in _REQUEST_PSEUDO:
                raise _Malformed(f"unknown pseudo-header {name.decode('latin-1')}")
            if name in pseudo:
                raise _Malformed(f"duplicate pseudo-header {name.decode('latin-1')}")
            pseudo[name] = value
            continue
        regular_seen = True
        if name in _CONNECTION_SPECIFIC:
            raise _Malformed(f"connection-specific header {name.decode('latin-1')}")
        if name == b"te" and value.lower() != b"trailers":
            raise _Malformed("te other than 'trailers'")
        if name == b"content-length":
            if not value.isdigit() or len(value) > 18:
                raise _Malformed("content-length is not a plain decimal number")
            if content_length is not None and content_length != int(value):
                raise _Malformed("conflicting content-length headers")
            content_length = int(value)
        if name == b"cookie":
            cookies.append(value)  # RFC 9113 8.2.3: crumbs are joined for HTTP/1-style apps
            continue
        headers.append((name, value))
    method = pseudo.get(b":method")
    scheme = pseudo.get(b":scheme")
    path = pseudo.get(b":path")
    authority = pseudo.get(b":authority")
    if b":protocol" in pseudo:
        raise _Malformed(":protocol without extended CONNECT")
    if method is None:
        raise _Malformed("missing :method")
    if method != b"CONNECT" and (scheme is None or path is None):
        raise _Malformed("missing :scheme or :path")
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    if authority is not None and not any(n == b"host" for n, _ in headers):
        headers.insert(0, (b"host", authority))
    request = _Request(
        method=method.decode("latin-1"),
        scheme=(scheme or b"").decode("latin-1"),
        target=path or b"",
        raw_path=b"",
        path="",
        query_string=b"",
        headers=headers,
        content_length=content_length,
    )
    line = len(method) + len(scheme or b"") + len(authority or b"") + len(path or b"")
    if method == b"CONNECT":
        request.error_status, request.error_reason = 405, "method_not_allowed"
        request.error_message = "CONNECT is not supported: this is an origin server"
    elif line > limits.max_request_line_size:
        request.error_status, request.error_reason = 414, "request_line_too_long"
        request.error_message = f"request line longer than {limits.max_request_line_size} bytes"
    elif (
        len(headers) > limits.max_request_header_count
        or total > limits.max_request_headers_total_size
    ):
        request.error_status, request.error_reason = 431, "headers_too_large"
        request.error_message = "request headers too large"
    assert path is not None or method == b"CONNECT"
    if path is not None:
        if path == b"*":
            if method != b"OPTIONS":
                raise _Malformed("'*' path with a method other than OPTIONS")
            request.raw_path = b"*"
        elif not path.startswith(b"/"):
            raise _Malformed(":path must start with '/'")
        else:
            if _BAD_PATH_BYTE.search(path):
                raise _Malformed("invalid byte in :path")
            raw_path, _, query = path.partition(b"?")
            request.raw_path = raw_path
            request.query_string = query
        request.path = unquote(request.raw_path.decode("latin-1"), errors="replace")
    if scheme is not None and scheme.decode("latin-1").lower() != transport_scheme:
        if not (allow_alternate_schemes and _URI_SCHEME.fullmatch(scheme)):
            raise _Malformed(
                f":scheme {scheme.decode('latin-1')!r} does not match the connection "
                "(allow_alternate_schemes accepts it)"
            )
        request.scheme = scheme.decode("ascii").lower()
    return request
