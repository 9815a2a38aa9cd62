"""The HTTP/2 connection engine, on h2: one object per connection, no I/O, no clock.

Theory of operation
-------------------
h2 owns framing, HPACK and the flow-control arithmetic. This module owns everything a server
decides: which requests are well-formed, how many run at once, when windows are credited, how
response bytes are scheduled across streams, and which misbehaviour ends the connection.

Streams. Each request is an ``HttpStream`` (the same feature object HTTP/1.1 uses) in
``self._streams`` until both its request side and its response side are finished *and* the app
has let go of it (``stream_finished``). Streams whose app is still running count against
``max_concurrent_streams`` even after the peer reset them, so resetting streams quickly
(CVE-2023-44487) cannot pile up work; a new stream over the limit gets REFUSED_STREAM.

Malformed requests. h2's own inbound header validation is off: this module validates each
request (RFC 9113 8.2-8.3) and answers a bad one with RST_STREAM(PROTOCOL_ERROR) on that stream
only, as RFC 9113 8.1.1 allows; the other streams carry on. A content-length mismatch, which h2
would escalate to the whole connection, is caught per stream the same way. Connection-level
errors (bad frames, HPACK failures, flow-control violations) get GOAWAY with h2's code.

Flow control. Inbound, the connection window is credited as soon as bytes arrive and a stream's
window only as its app reads, so one slow reader holds back only its own stream. Outbound, each
stream has its own send buffer; ``_flush`` moves bytes from the buffers into frames as windows
allow, round-robin, and an app's ``send`` waits (``can_write`` false) while its own buffer is
over ``max_response_buffer_size``. A stream stuck behind a zero window for longer than the
minimum response data rate allows is reset, so a stalled peer cannot hold the app forever.

Abuse limits. Within each one-second window the connection tolerates a bounded number of
stream resets (peer or ours: rapid reset and MadeYouReset), PINGs, SETTINGS and header-block
fragments; past that it sends GOAWAY(ENHANCE_YOUR_CALM) and closes. A header block that grows
past the header limits (a CONTINUATION flood or an HPACK bomb) ends the connection.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame, WindowUpdateFrame

from .config import DataRate
from .context import Rejection, ServerContext, TransportInfo
from .errors import ConfigError, LocalProtocolError
from .events import Event, RequestReceived, StreamUpdated
from .files import FileSegment
from .flush import FlushFromState
from .forwarded import apply_forwarded
from .headers import escape_for_log, validate_response_headers
from .http1_head import ALLOW_ALL_BUT_CONNECT
from .pairing import check_pairing_token
from .stream import HttpStream
from .url_prefixes import match_path_base

Headers = list[tuple[bytes, bytes]]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
# Headers of an h2c upgrade request that belong to the HTTP/1.1 hop, not to the request.
_UPGRADE_HOP_BY_HOP = frozenset(
    {b"connection", b"upgrade", b"http2-settings", b"keep-alive", b"transfer-encoding"}
)
# RFC 3986 3.1; what Kestrel's AllowAlternateSchemes accepts in :scheme.
_URI_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*")
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
_MAX_STREAM_ID = 2**31 - 1


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


class _MalformedStream(h2.events.Event):
    """Raised internally by h2 as a connection error; we turn it into a stream reset."""

    def __init__(self, stream_id: int, message: str, flow_controlled_length: int = 0) -> None:
        self.stream_id = stream_id
        self.message = message
        self.flow_controlled_length = flow_controlled_length


class _ServerH2Connection(h2.connection.H2Connection):
    """h2, with per-stream content-length errors kept per stream (RFC 9113 8.1.1).

    h2 raises them as connection errors from inside frame processing; by then the frame's
    HPACK block (if any) is decoded and the stream state is consistent, so resetting just that
    stream is safe. Pinned to h2 4.x, where ``_receive_frame`` is the per-frame entry point.
    """

    def _receive_frame(self, frame: Any) -> list[h2.events.Event]:
        try:
            return super()._receive_frame(frame)
        except h2.exceptions.ProtocolError as exc:
            message = str(exc)
            per_stream = isinstance(
                exc, h2.exceptions.InvalidBodyLengthError
            ) or message.startswith(
                ("Invalid content-length header", "Conflicting content-length headers")
            )
            if not per_stream or frame.stream_id not in self.streams:
                raise
            self.reset_stream(frame.stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            # A DATA frame was already counted against the connection window: give it back.
            length = getattr(frame, "flow_controlled_length", 0)
            return [_MalformedStream(frame.stream_id, f"malformed request: {message}", length)]


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


class Http2Protocol(FlushFromState):
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
        self._h2_limits = limits or Http2Limits()
        self._transport = transport
        self.connection_id = context.next_connection_id()
        self._now = now
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=True,
            normalize_outbound_headers=True,
        )
        self._h2 = _ServerH2Connection(config=config)
        self._streams: dict[int, HttpStream] = {}
        self._send_buffers: dict[int, bytearray] = {}
        self._ending: set[int] = set()  # streams whose app has sent the last body bytes
        # Streams with bytes waiting for window: (since, bytes flushed by then).
        self._blocked_since: dict[int, tuple[float, int]] = {}
        self._flushed: dict[int, int] = {}  # response bytes sent, per stream
        self._credited: dict[int, int] = {}  # body bytes already credited back, per stream
        self._finished: set[int] = set()  # streams whose app has let go of them
        self._running_apps = 0
        self._events: list[Event] = []
        self._closed = False
        self._goaway_sent = False
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
        self._initiate(upgrade_settings)

    def _initiate(self, upgrade_settings: bytes | None = None) -> None:
        limits = self._h2_limits
        settings = {
            SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            SettingCodes.HEADER_TABLE_SIZE: limits.header_table_size,
            SettingCodes.MAX_FRAME_SIZE: limits.max_frame_size,
            SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_stream_window_size,
            SettingCodes.ENABLE_PUSH: 0,
        }
        h2conn = self._h2
        h2conn.local_settings = h2.settings.Settings(client=False, initial_values=settings)
        if upgrade_settings is None:
            h2conn.initiate_connection()
        else:
            h2conn.initiate_upgrade_connection(upgrade_settings)
        # The peer learns our stream limit from the SETTINGS frame just queued; h2 itself is
        # told there is none, because it would enforce ours as a connection error while RFC
        # 9113 5.1.2 asks for a stream error (REFUSED_STREAM), which _start_stream sends.
        unlimited = dict(settings)
        unlimited[SettingCodes.MAX_CONCURRENT_STREAMS] = _MAX_STREAM_ID
        h2conn.local_settings = h2.settings.Settings(client=False, initial_values=unlimited)
        h2conn.decoder.max_header_list_size = limits.max_header_list_size * 2
        extra = limits.initial_connection_window_size - 65_535
        if extra > 0:
            h2conn.increment_flow_control_window(extra)

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
        self._highest_stream_id = 1
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
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._connection_error(f"HTTP/2 protocol error: {exc}", "h2_protocol_error")
            return self.pop_events()
        for event in events:
            if self.should_close:
                break  # a limit tripped mid-batch: the rest of what was read is ignored
            self._handle(event)
        self._flush()
        return self.pop_events()

    def _handle(self, event: h2.events.Event) -> None:
        now = self._now
        if isinstance(event, h2.events.RequestReceived):
            self._start_stream(event.stream_id, event.headers, event.stream_ended is not None)
        elif isinstance(event, h2.events.DataReceived):
            self._data_received(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.body_complete_flag = True
                self._wake(stream)
                self._maybe_retire(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self._reset_seen(now)
            stream = self._streams.get(event.stream_id)
            if stream is not None and not stream.response_complete:
                stream.aborted_flag = True
                self._wake(stream)
            self._drop_output(event.stream_id)
            self._maybe_retire(event.stream_id)
        elif isinstance(event, _MalformedStream):
            self._credit_connection(event.flow_controlled_length)
            self._reset_seen(now)
            self._record(None, "h2_malformed_request", event.message)
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.aborted_flag = True
                self._wake(stream)
            self._drop_output(event.stream_id)
            self._maybe_retire(event.stream_id)
        elif isinstance(event, h2.events.WindowUpdated):
            pass  # _flush after the batch sends whatever the new window allows
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.body_complete_flag = True
                self._wake(stream)
        elif isinstance(event, h2.events.PingReceived):
            if self._pings.hit(now) > self._h2_limits.max_pings_per_second:
                self._calm_down("PING flood")
        elif isinstance(event, h2.events.PingAckReceived):
            self._ping_deadline = None
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if self._settings.hit(now) > self._h2_limits.max_settings_per_second:
                self._calm_down("SETTINGS flood")
        elif isinstance(event, h2.events.ConnectionTerminated):
            if event.error_code == h2.errors.ErrorCodes.NO_ERROR and self._streams:
                # The peer opens no more streams (RFC 9113 6.8); those in flight finish, and
                # the connection closes once they have (as after our own graceful GOAWAY).
                self._goaway(h2.errors.ErrorCodes.NO_ERROR)
            else:
                self._peer_gone()

    # -- requests -----------------------------------------------------------------------------

    def _start_stream(self, stream_id: int, headers: Headers, ended: bool) -> None:
        self._highest_stream_id = max(self._highest_stream_id, stream_id)
        if self._shutting_down or self._goaway_sent:
            self._reset_id(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        if self._running_apps >= self._h2_limits.max_concurrent_streams:
            self._reset_id(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            self._record(None, "h2_refused_stream", "too many concurrent streams")
            self._reset_seen(self._now)
            return
        try:
            request = _parse_request(
                headers,
                self._transport.scheme,
                self._limits,
                allow_alternate_schemes=self._context.config.allow_alternate_schemes,
            )
        except _Malformed as exc:
            self._reset_id(stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            self._record(None, "h2_malformed_request", f"malformed request: {exc}")
            self._reset_seen(self._now)
            return
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
            headers=request.headers,
            content_length=request.content_length,
            has_body=not ended,
        )
        token = self._context.config.pairing_token
        if (
            token is not None
            and request.error_status is None
            and (refusal := check_pairing_token(stream, token))
        ):
            request.error_status, request.error_reason = refusal.status, refusal.reason
            request.error_message = str(refusal)
        forwarded = self._context.config.forwarded
        if (
            forwarded is not None
            and request.error_status is None
            and (refusal := apply_forwarded(stream, forwarded))
        ):
            request.error_status, request.error_reason = refusal.status, refusal.reason
            request.error_message = str(refusal)
        if request.error_status is not None:
            # Limits that HTTP/1.1 answers with a status get the same status here; no app runs.
            self._record(request.error_status, request.error_reason, request.error_message)
            self._finished.add(stream_id)
            self._answer_error(stream, request.error_status, request.error_message)
            return
        self._running_apps += 1
        cache = self._context.response_cache
        if cache is not None and cache.try_serve(stream, self._now):
            return
        self._events.append(RequestReceived(stream))

    def _data_received(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        length = event.flow_controlled_length
        self._credit_connection(length)
        stream = self._streams.get(stream_id)
        data = event.data
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
            self._reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
        stream.aborted_flag = True
        self._wake(stream)

    # -- flow control (inbound) ------------------------------------------------------------------

    def _credit_connection(self, size: int) -> None:
        if size:
            h2conn = self._h2
            # process_bytes already counts the increment as granted; sending it through
            # increment_flow_control_window would count it twice and the window would drift
            # until no more updates go out. So the frame goes out as acknowledge_received_data
            # sends its own.
            increment = h2conn._inbound_flow_control_window_manager.process_bytes(size)
            if increment:
                frame = WindowUpdateFrame(0)
                frame.window_increment = increment
                h2conn._prepare_for_sending([frame])

    def _credit_stream(self, stream_id: int, size: int) -> None:
        if not size:
            return
        h2conn = self._h2
        stream = h2conn.streams.get(stream_id)
        if stream is None or not stream.open:
            return
        try:
            frames = stream.acknowledge_received_data(size)
        except h2.exceptions.StreamClosedError:
            return
        h2conn._prepare_for_sending(frames)

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
            self._reset_stream(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
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
        block = [(b":status", str(status).encode())]
        block += [(n.lower(), v) for n, v in headers if n.lower() not in _CONNECTION_SPECIFIC]
        self._h2.send_headers(stream.stream_id, block)

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
                (n.lower(), v) for n, v in trailers if n.lower() not in _CONNECTION_SPECIFIC
            ]
        ended_with_head = False
        if not stream.response_started:
            ended_with_head = self._send_head(stream, data, end and not trailers)
        elif data and stream.body_allowed:
            self._send_buffers.setdefault(stream_id, bytearray()).extend(data)
            stream.bytes_sent += len(data)
        if end:
            if not ended_with_head:  # HEADERS already carried END_STREAM: nothing to end
                self._ending.add(stream_id)
            stream.response_complete = True
            self._context.observer.response_completed(stream)
            stream.run_on_completed()
            self._wake(stream)
        self._flush()

    def _send_head(self, stream: HttpStream, data: bytes, end: bool) -> bool:
        """Send the response head; True when it also ended the stream."""
        stream.begin_response()
        status = stream.status
        headers: Headers = [(b":status", str(status).encode())]
        has_date = has_server = has_length = False
        for name, value in stream.response_headers:
            lowered = name.lower()
            if lowered in _CONNECTION_SPECIFIC:
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
        end_now = end and (not data or not body_allowed)
        self._h2.send_headers(stream.stream_id, headers, end_stream=end_now)
        if end_now:
            self._ending.discard(stream.stream_id)
            self._stream_output_done(stream.stream_id)
        elif data and body_allowed:
            self._send_buffers.setdefault(stream.stream_id, bytearray()).extend(data)
            stream.bytes_sent += len(data)
        return end_now

    def _answer_error(self, stream: HttpStream, status: int, message: str) -> None:
        body = f"{status} {message}\n".encode()
        headers: Headers = [
            (b":status", str(status).encode()),
            (b"date", self._context.date.value),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        if status == 405:
            headers.append((b"allow", ALLOW_ALL_BUT_CONNECT))
        stream.status = status
        stream.response_started = True
        stream.response_complete = True
        self._h2.send_headers(stream.stream_id, headers)
        self._send_buffers.setdefault(stream.stream_id, bytearray()).extend(body)
        self._ending.add(stream.stream_id)
        self._flush()

    # -- flow control (outbound) -------------------------------------------------------------

    def _flush(self) -> None:
        """Move buffered response bytes into DATA frames as the windows allow, round-robin."""
        if self._closed:
            return
        h2conn = self._h2
        progress = True
        while progress and self._send_buffers:
            progress = False
            for stream_id in list(self._send_buffers):
                buffer = self._send_buffers[stream_id]
                if buffer:
                    try:
                        window = h2conn.local_flow_control_window(stream_id)
                    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                        self._drop_output(stream_id)
                        continue
                    size = min(window, h2conn.max_outbound_frame_size, len(buffer))
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
                    h2conn.send_data(
                        stream_id, chunk, end_stream=last and stream_id not in self._trailers
                    )
                    if last and stream_id in self._trailers:
                        h2conn.send_headers(
                            stream_id, self._trailers.pop(stream_id), end_stream=True
                        )
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
        for stream_id in list(self._ending):
            if stream_id not in self._send_buffers:
                self._end_stream(stream_id)

    def _end_stream(self, stream_id: int) -> None:
        trailers = self._trailers.pop(stream_id, None)
        if trailers:
            self._h2.send_headers(stream_id, trailers, end_stream=True)
        else:
            self._h2.end_stream(stream_id)
        self._ending.discard(stream_id)
        self._stream_output_done(stream_id)

    def _stream_output_done(self, stream_id: int) -> None:
        self._send_buffers.pop(stream_id, None)
        self._blocked_since.pop(stream_id, None)
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.body_complete_flag:
            # RFC 9113 8.1: the response is complete; the rest of the request is not needed.
            self._reset_stream(stream, h2.errors.ErrorCodes.NO_ERROR)
        self._maybe_retire(stream_id)

    def _drop_output(self, stream_id: int) -> None:
        self._trailers.pop(stream_id, None)
        self._flushed.pop(stream_id, None)
        self._send_buffers.pop(stream_id, None)
        self._blocked_since.pop(stream_id, None)
        self._ending.discard(stream_id)

    def _reset_stream(self, stream: HttpStream, code: h2.errors.ErrorCodes) -> None:
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._h2.reset_stream(stream.stream_id, code)
        if not stream.response_complete and code != h2.errors.ErrorCodes.NO_ERROR:
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
            self._goaway(h2.errors.ErrorCodes.NO_ERROR)
            self._close_after_flush()
            return self.pop_events()
        if self._ping_deadline is not None and now >= self._ping_deadline:
            self._goaway(h2.errors.ErrorCodes.NO_ERROR)
            self._record(None, "h2_ping_timeout", "keep-alive PING was not answered in time")
            self._abort_all()
            return self.pop_events()
        ping_at = self._next_ping()
        if ping_at is not None and now >= ping_at:
            # Silence for keep_alive_ping_delay: ask the peer whether it is still there.
            self._h2.ping(b"tiercel\x00")
            self._ping_deadline = now + self._h2_limits.keep_alive_ping_timeout
        rate = self._limits.min_response_data_rate
        if rate is not None:
            for stream_id in list(self._blocked_since):
                if now >= self._stall_deadline(stream_id, rate):
                    stream = self._streams.get(stream_id)
                    if stream is not None:
                        self._record(None, "response_data_rate", "flow-control window stalled")
                        self._reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
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
        candidates = [
            d
            for d in (
                self._idle_deadline,
                self._ping_deadline,
                self._write_deadline,
                self._next_ping(),
            )
            if d
        ]
        rate = self._limits.min_response_data_rate
        if rate is not None:
            for stream_id in self._blocked_since:
                candidates.append(self._stall_deadline(stream_id, rate))
        return min(candidates) if candidates else None

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
        return self._h2.data_to_send()

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
            self._goaway(h2.errors.ErrorCodes.NO_ERROR)
            if not self._streams:
                self._close_after_flush()
        return self.pop_events()

    def connection_lost(self, now: float) -> list[Event]:
        self._now = now
        self._closed = True
        self._abort_all()
        return self.pop_events()

    def _goaway(self, code: h2.errors.ErrorCodes) -> None:
        if self._goaway_sent:
            return
        self._goaway_sent = True
        if code == h2.errors.ErrorCodes.NO_ERROR:
            # Graceful: the streams in flight must finish, so h2's state machine stays open
            # (close_connection would make it refuse the peer's WINDOW_UPDATEs and PINGs);
            # new streams are refused by _start_stream.
            frame = GoAwayFrame(0)
            frame.last_stream_id = self._highest_stream_id
            frame.error_code = code
            self._h2._prepare_for_sending([frame])
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection(code, last_stream_id=self._highest_stream_id)

    def _reset_id(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
            self._h2.reset_stream(stream_id, code)

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

    def _connection_error(self, message: str, reason: str) -> None:
        # h2 has already queued a GOAWAY with the right code for its own errors.
        self._goaway_sent = True
        self._record(None, reason, message)
        self._abort_all()

    def _calm_down(self, what: str) -> None:
        self._goaway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
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


def _check_field(name: bytes, value: bytes) -> None:
    if not name or name != name.lower():
        raise _Malformed("header names must be lower-case")
    for byte in name.lstrip(b":"):
        if byte <= 0x20 or byte >= 0x7F or byte in b'()<>@,;:\\"/[]?={}':
            raise _Malformed("invalid character in a header name")
    if b"\r" in value or b"\n" in value or b"\x00" in value:
        raise _Malformed("CR, LF or NUL in a header value")
    if value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
        raise _Malformed("whitespace around a header value")


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
            for byte in path:
                if byte <= 0x20 or byte >= 0x7F or byte == 0x23:
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
