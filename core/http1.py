"""The HTTP/1.1 connection engine: one object per connection, no I/O, no clock.

Theory of operation
-------------------
A connection is always in one of five phases:

    IDLE      no byte of the next request yet        deadline: keep-alive timeout -> close
    HEAD      part of a request head received        deadline: request headers timeout -> 408
    ACTIVE    a request is with the app              deadlines: body data rate -> 408,
                                                                response data rate -> abort
    DRAINING  response done, unread body discarded   deadline: drain timeout -> close
    CLOSED    nothing more is read; once ``data_to_send`` is flushed the adapter closes

IDLE -> HEAD when the first byte arrives (the headers clock starts then and is never reset, so
trickling bytes buys nothing); HEAD -> ACTIVE when the head parses; ACTIVE -> IDLE (or straight
to HEAD/ACTIVE for pipelined bytes) when both the request body and the response are complete;
ACTIVE -> DRAINING when the response completes first; anything -> CLOSED on an error, a timeout,
``Connection: close`` or shutdown.

Requests are served one at a time: pipelined requests wait in the codec's buffer, unparsed,
until the response before them is complete, so answers go out in order and nothing after a
framing error is ever parsed. Back-pressure on input: ``wants_read`` is false while the bytes
buffered for the app (body) or waiting in the codec exceed ``max_request_buffer_size``.
"""

from __future__ import annotations

import itertools
import re
from enum import Enum
from typing import TYPE_CHECKING, Any

from .context import Rejection, ServerContext, TransportInfo
from .delegation import Handoff
from .errors import LocalProtocolError, RemoteProtocolError, RequestBodyTooLarge
from .events import ConnectionDelegated, Event, RequestReceived, StreamUpdated
from .flush import ABORT, CLOSE, KEEP_READING, NO_EVENTS, PAUSE_READING, VECTORED_FROM, Flush
from .forwarded import apply_forwarded
from .headers import escape_for_log, validate_response_headers
from .http1_codec import (
    CLOSED,
    NEED_DATA,
    BodyData,
    EndOfBody,
    H11Codec,
    Http1Codec,
)
from .http1_fast import FastCodec
from .http1_head import ALLOW_ALL_BUT_CONNECT, RequestHead
from .pairing import check_pairing_token
from .status import STATUS_LINES_11, reason_phrase
from .stream import HttpStream
from .switching import rebind
from .url_prefixes import match_path_base

if TYPE_CHECKING:
    from .delegation import DelegationRules
    from .files import FileSegment
    from .http2 import Http2Limits, Http2Protocol
    from .response_cache import ResponseCache

Headers = list[tuple[bytes, bytes]]


class Phase(Enum):
    IDLE = "idle"
    HEAD = "head"
    ACTIVE = "active"
    DRAINING = "draining"
    CLOSED = "closed"


# The same members under module-level names: on CPython 3.11 each ``Phase.X`` is a class
# attribute lookup of about 70 ns, and a request passes a dozen such checks.
_IDLE, _HEAD, _ACTIVE, _DRAINING, _CLOSED = Phase


_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*={0,2}")


def error_response(
    status: int,
    message: str,
    context: ServerContext,
    extra: Headers | None = None,
    head_request: bool = False,
) -> bytes:
    """A complete response the engine sends on its own, always with ``Connection: close``.
    An answer to HEAD keeps its Content-Length but carries no body (RFC 9110 9.3.2)."""
    body = f"{status} {reason_phrase(status).decode()}: {message}\n".encode()
    lines = [STATUS_LINES_11[status], context.engine_lines(False, False)]
    for name, value in extra or ():
        lines += [name, b": ", value, b"\r\n"]
    lines += [
        b"content-type: text/plain; charset=utf-8\r\ncontent-length: ",
        str(len(body)).encode(),
        b"\r\nconnection: close\r\n\r\n",
        b"" if head_request else body,
    ]
    return b"".join(lines)


class Http1Protocol:
    # Rarely used state lives here as class-level defaults, set on the instance only when
    # needed: every attribute __init__ adds costs each request a little once the instance
    # dict outgrows CPython's shared-key layout (measured: 30 attributes cost 3% per request).
    # While the adapter writes a file: the framing that follows it and whether it ends the
    # response; output produced meanwhile waits (data_to_send).
    _after_file: tuple[bytes, bool] | None = None
    _before_file = 0  # how many items of _out go out before the file
    _answering_from_cache = False
    _held_by_buffer_limit = False  # the pump stopped for the request buffer limit
    # Request delegation (core/delegation.py), on cleartext connections of a server with
    # rules: the rules and every byte received, until the first request is decided.
    _delegation: DelegationRules | None = None
    _received_so_far: list[bytes] | None = None

    def __init__(
        self,
        context: ServerContext,
        transport: TransportInfo,
        now: float,
        codec: Http1Codec | None = None,
        h2c_upgrade: Http2Limits | None = None,
    ) -> None:
        self._context = context
        # When set, "Upgrade: h2c" requests switch this connection to HTTP/2 (RFC 7540 3.2).
        self._h2c_upgrade = h2c_upgrade
        self._upgrade_settings: bytes | None = None
        self._switched: Http2Protocol | None = None
        # The object the adapter holds for this connection (a sniffer may stand in front).
        self.front: Any = self
        self._chunked_response = False
        self._limits = context.config.limits
        self._transport = transport
        self.connection_id = context.next_connection_id()
        if codec is None:
            fast = context.config.http1_codec == "fast"
            codec = (
                FastCodec(self._limits, context.request_heads) if fast else H11Codec(self._limits)
            )
        self._codec: Http1Codec = codec
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._stream: HttpStream | None = None
        self._stream_ids = itertools.count(1)
        self.phase = _IDLE
        self._phase_deadline: float | None = now + self._limits.keep_alive_timeout
        self._now = now
        self._shutting_down = False
        self._peer_closed = False
        self._drained = 0
        # Body data rate bookkeeping for the current stream (None = not measuring).
        self._rate_start: float | None = None
        self._rate_paused_at: float | None = None
        # Response data rate: set while the adapter reports its write buffer as full.
        self._write_deadline: float | None = None
        self._write_blocked = False
        self._abort = False
        self._continue_sent = False
        if context.config.delegation is not None and transport.tls is None:
            self._record_for_delegation(context.config.delegation)

    # -- adapter interface --------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed received bytes; ``b""`` means the peer closed its sending side."""
        self._now = now
        if self.phase is _CLOSED:
            return self.pop_events()
        if not data:
            self._peer_closed = True
            stream = self._stream
            if (
                stream is not None
                and self.phase is _ACTIVE
                and stream.body_complete_flag
                and not stream.response_complete
            ):
                # A client that closes its side while the app works has gone away (as uvicorn
                # and hypercorn treat it): the app sees http.disconnect.
                self._close()
                self._abort_stream(stream)
                return self.pop_events()
        elif self.phase is _IDLE:
            self.phase = _HEAD
            self._phase_deadline = now + self._limits.request_headers_timeout
        self._codec.receive_data(data)
        self._pump()
        return self.pop_events()

    def connection_lost(self, now: float) -> list[Event]:
        """The transport is gone (reset, or closed by us): abort whatever is in flight."""
        self._now = now
        self._close()
        stream = self._stream
        if stream is not None and not stream.response_complete:
            self._abort_stream(stream)
        return self.pop_events()

    def on_timer(self, now: float) -> list[Event]:
        self._now = now
        if self._write_deadline is not None and now >= self._write_deadline and not self._abort:
            # The client stopped reading. Even a closed connection's last flush is bounded:
            # the adapter drops what is unsent (should_abort) instead of waiting forever.
            self._abort = True
            self._fail(None, "response_data_rate", "the client read the response too slowly")
        elif self.phase is _CLOSED:
            return self.pop_events()
        elif self._phase_deadline is not None and now >= self._phase_deadline:
            if self.phase is _IDLE:
                self._close()
            elif self.phase is _HEAD:
                self._fail(
                    RemoteProtocolError(
                        "request headers were not received within "
                        f"{self._limits.request_headers_timeout:g} s",
                        408,
                        "request_headers_timeout",
                    )
                )
            elif self.phase is _DRAINING:
                self._close()
        else:
            rate_deadline = self._body_rate_deadline()
            if rate_deadline is not None and now >= rate_deadline:
                rate = self._limits.min_request_body_data_rate
                assert rate is not None
                self._fail(
                    RemoteProtocolError(
                        "the request body arrived slower than the minimum rate of "
                        f"{rate.bytes_per_second:g} bytes/s",
                        408,
                        "request_body_data_rate",
                    )
                )
        return self.pop_events()

    def next_deadline(self) -> float | None:
        if self.phase is _CLOSED:
            return None if self._abort else self._write_deadline
        # Called after every engine call by the adapters: kept allocation-free.
        deadline = self._phase_deadline
        write = self._write_deadline
        if write is None and self._rate_start is None:
            return deadline  # the usual case: no write or body-rate clock running
        if write is not None and (deadline is None or write < deadline):
            deadline = write
        if self._rate_start is not None:
            rate = self._body_rate_deadline()
            if rate is not None and (deadline is None or rate < deadline):
                deadline = rate
        return deadline

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        if self._after_file is not None:
            return self._data_before_file()
        out = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        return out

    def pop_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def flush(self) -> Flush:
        """``data_to_send``, ``pop_events``, the read/close/abort decision and
        ``next_deadline`` in one call (core/flush.py); this runs after every engine call."""
        if self._switched is not None:
            return self._switched.flush()
        events = self._events
        if events:
            self._events = []
        else:
            events = NO_EVENTS  # type: ignore[assignment]
        if self._abort:
            return events, b"", ABORT, None
        out = self._out
        data: bytes | list[bytes]
        if not out:
            data = b""
        elif self._after_file is not None:
            data = self._data_before_file()
        elif len(out) == 1:
            data = out[0]
            out.clear()
        elif sum(map(len, out)) < VECTORED_FROM:
            data = b"".join(out)
            out.clear()
        else:  # a large body: written as it is, after its head, without copying it
            data, self._out = out, []
        phase = self.phase
        if phase is _CLOSED:
            return events, data, CLOSE, self._write_deadline
        if self._peer_closed:
            action = PAUSE_READING
        else:
            buffered = self._codec.buffered_size
            stream = self._stream
            if stream is not None and phase is _ACTIVE:
                buffered += stream.body_buffered
            action = (
                KEEP_READING if buffered < self._limits.max_request_buffer_size else PAUSE_READING
            )
        return events, data, action, self.next_deadline()

    def _data_before_file(self) -> bytes:
        """While the adapter writes a file: only the bytes that precede it."""
        count, self._before_file = self._before_file, 0
        data = b"".join(self._out[:count])
        del self._out[:count]
        return data

    @property
    def wants_read(self) -> bool:
        if self._switched is not None:
            return self._switched.wants_read
        if self.phase is _CLOSED:
            return False
        if self._peer_closed:
            return False
        limit = self._limits.max_request_buffer_size
        stream = self._stream
        buffered = self._codec.buffered_size
        if stream is not None and self.phase is _ACTIVE:
            buffered += stream.body_buffered
        return buffered < limit

    @property
    def should_close(self) -> bool:
        """True when the adapter should close the transport after sending ``data_to_send``."""
        if self._switched is not None:
            return self._switched.should_close
        return self.phase is _CLOSED

    @property
    def is_idle(self) -> bool:
        if self._switched is not None:
            return self._switched.is_idle
        return self.phase is _IDLE

    def set_write_blocked(self, blocked: bool, now: float, buffered: int = 0) -> None:
        """The adapter's write buffer is over (or back under) its high-water mark."""
        self._now = now
        rate = self._limits.min_response_data_rate
        was_blocked, self._write_blocked = self._write_blocked, blocked
        if not blocked or rate is None:
            self._write_deadline = None
        elif self._write_deadline is None:
            self._write_deadline = now + max(rate.grace_period, buffered / rate.bytes_per_second)
        if was_blocked and not blocked and self._stream is None:
            self._pump()  # pipelined requests held back while the client was not reading

    @property
    def should_abort(self) -> bool:
        """True when the adapter should drop unsent bytes and reset the connection."""
        if self._switched is not None:
            return self._switched.should_abort
        return self._abort

    def shutdown(self, now: float) -> list[Event]:
        """Graceful stop: close when idle, otherwise after the response in flight."""
        self._now = now
        self._shutting_down = True
        if self.phase is _IDLE:
            self._close()
        return self.pop_events()

    # -- internals: input ---------------------------------------------------------------------

    def _enter(self, phase: Phase, deadline: float | None) -> None:
        self.phase = phase
        self._phase_deadline = deadline

    def _pump(self) -> None:
        """Turn buffered bytes into events as far as the current phase allows."""
        codec = self._codec
        try:
            while self.phase is not _CLOSED:
                stream = self._stream
                if stream is None:
                    if self._write_blocked:
                        return  # answer no new request while the client is not reading ours
                    event = codec.next_event()
                    if event is NEED_DATA:
                        if codec.buffered_size and self.phase is _IDLE:
                            self._enter(_HEAD, self._now + self._limits.request_headers_timeout)
                        return
                    if event is CLOSED:
                        self._close()
                        return
                    if type(event) is not RequestHead:  # cheaper than isinstance, per request
                        raise AssertionError(f"the codec returned {event!r} for a head")
                    self._start_stream(event)
                    continue
                if self.phase is _ACTIVE:
                    if stream.body_complete_flag:
                        return
                    if (
                        stream.body_buffered >= self._limits.max_request_buffer_size
                        and self._upgrade_settings is None
                    ):
                        self._held_by_buffer_limit = True
                        self._pause_body_rate()
                        return
                    event = codec.next_event()
                    if isinstance(event, BodyData):
                        self._body_arrived(stream, event.data)
                    elif isinstance(event, EndOfBody):
                        stream.body_complete_flag = True
                        self._rate_start = None
                        if self._upgrade_settings is not None:
                            self._switch_to_h2(stream)
                            return
                        self._wake(stream)
                    else:
                        return
                elif self.phase is _DRAINING:
                    event = codec.next_event()
                    if isinstance(event, BodyData):
                        self._drained += len(event.data)
                        if self._drained > self._limits.max_drain_size:
                            self._close()
                    elif isinstance(event, EndOfBody):
                        stream.body_complete_flag = True
                        self._finish_cycle()
                    else:
                        return
                else:
                    return
        except RemoteProtocolError as error:
            self._fail(error)

    def _start_stream(self, head: RequestHead) -> None:
        if self._delegation is not None and self._delegate(head):
            return
        now = self._now
        transport = self._transport
        scheme = transport.scheme
        path = head.path
        root = self._context.config.root_path
        path_base = ""
        if root and (matched := match_path_base(path, root)) is not None:
            path_base, path = matched, path[len(matched) :]
        # Positional: CPython matches keyword arguments one by one, and with nineteen of them
        # that cost about a microsecond per request (the order is HttpStream.__init__'s).
        stream = HttpStream(
            self,
            next(self._stream_ids),
            head.method_name,
            scheme,
            head.version_name,
            head.target,
            head.raw_path,
            path,
            head.query_string,
            list(head.headers),  # the head may be a remembered one (http1_fast), shared
            path_base,
            self.connection_id,
            transport,
            self._limits.max_request_body_size,
            head.content_length,
            head.has_body,
            head.expect_continue,
            now,
            self._context.wall_time,
        )
        token = self._context.config.pairing_token
        if token is not None and (refusal := check_pairing_token(stream, token)):
            raise refusal  # _pump answers it (400) before any app runs
        forwarded = self._context.config.forwarded
        if forwarded is not None and (refusal := apply_forwarded(stream, forwarded)):
            raise refusal  # _pump answers it (400) before any app runs
        self._stream = stream
        self._continue_sent = False
        self._drained = 0
        self._rate_start = None
        self._rate_paused_at = None
        self._chunked_response = False
        self.phase = _ACTIVE
        self._phase_deadline = None
        settings = self._h2c_settings(head) if head.upgrade is not None else None
        if settings is not None:
            # The request is answered over HTTP/2 once its body (if any) is read.
            self._upgrade_settings = settings
            if stream.body_complete_flag:
                self._switch_to_h2(stream)
            return
        cache = self._context.response_cache
        if cache is not None and self._answer_from_cache(cache, stream, now):
            return
        self._events.append(RequestReceived(stream))

    # -- request delegation (core/delegation.py) ---------------------------------------------

    def _record_for_delegation(self, rules: DelegationRules) -> None:
        """Keep every received byte until the first request is decided: a delegated
        connection takes them all to the other process. Only such connections pay for it
        (their receive_data is wrapped; a front rebinding to it takes the wrapper)."""
        self._delegation = rules
        self._received_so_far = []
        receive = self.receive_data

        def receive_recorded(data: bytes, now: float) -> list[Event]:
            received = self._received_so_far
            if received is not None:
                received.append(data)
            return receive(data, now)

        self.receive_data = receive_recorded  # type: ignore[method-assign]

    def _delegate(self, head: RequestHead) -> bool:
        """Decide the first request: hand the connection over (True) or serve it here."""
        rules, self._delegation = self._delegation, None
        received, self._received_so_far = self._received_so_far, None
        assert rules is not None and received is not None
        local = self._transport.local_address
        local_ip, port = local if isinstance(local, tuple) else (None, 0)
        host = (head.host or b"").decode("latin-1")
        queue = rules.queue_for(host, port, head.path, local_ip)
        if queue is None:
            return False
        self._enter(_CLOSED, None)
        self._rate_start = None
        handoff = Handoff(
            data=b"".join(received),
            remote_address=self._transport.remote_address,
            local_address=local if isinstance(local, tuple) else None,
        )
        self._events.append(ConnectionDelegated(queue, handoff, self._refuse_delegation))
        return True

    def _refuse_delegation(self, reason: str) -> None:
        """The adapter could not hand the connection over: answer 503 and close."""
        message = f"this request belongs to another server process, which cannot take it: {reason}"
        self._out.append(error_response(503, message, self._context))
        self._record(503, "delegation_failed", message)

    def _answer_from_cache(self, cache: ResponseCache, stream: HttpStream, now: float) -> bool:
        # Answering completes the cycle, which would pump the next pipelined request from
        # inside this pump; _finish_cycle leaves that to the loop already running.
        self._answering_from_cache = True
        try:
            return cache.try_serve(stream, now)
        finally:
            self._answering_from_cache = False

    def _h2c_settings(self, head: RequestHead) -> bytes | None:
        """The HTTP2-Settings value when this request may upgrade to h2c, else None."""
        if self._h2c_upgrade is None or head.upgrade is None:
            return None
        upgrade = settings = None
        tokens: list[bytes] = []
        for name, value in head.headers:
            if name == b"upgrade":
                upgrade = value.lower()
            elif name == b"http2-settings":
                if settings is not None:
                    return None
                settings = value
            elif name == b"connection":
                tokens.extend(t.strip().lower() for t in value.split(b","))
        if upgrade is None or b"h2c" not in [u.strip() for u in upgrade.split(b",")]:
            return None
        if settings is None or b"upgrade" not in tokens or b"http2-settings" not in tokens:
            return None
        # Upgrade only when the body is known to be small: it must be read before switching
        # (RFC 7540 3.2); otherwise the request is simply served over HTTP/1.1.
        if head.chunked or (head.content_length or 0) > self._limits.max_request_buffer_size:
            return None
        if _BASE64URL.fullmatch(settings) is None:
            return None
        return settings

    def _switch_to_h2(self, stream: HttpStream) -> None:
        from .http2 import Http2Protocol

        assert self._h2c_upgrade is not None and self._upgrade_settings is not None
        leftover = self._codec.take_remaining()
        h2 = Http2Protocol.for_upgrade(
            self._context,
            self._transport,
            self._now,
            limits=self._h2c_upgrade,
            settings_header=self._upgrade_settings,
            request=stream,
            body=stream.read_body(self._now),
        )
        switching = b"".join(self._out) + (
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"
        )
        self._out.clear()
        self._switched = h2
        fronts: list[Any] = list({id(x): x for x in (self, self.front)}.values())
        pending = [switching]

        def unswitch() -> bytes:
            # The 101 goes out before HTTP/2's first frames, once; then h2 alone.
            for front in fronts:
                front.data_to_send = h2.data_to_send
                front.flush = h2.flush
            return pending.pop() if pending else b""

        def first_data_to_send() -> bytes:
            return unswitch() + h2.data_to_send()

        def first_flush() -> Flush:
            switching = unswitch()
            events, data, action, deadline = h2.flush()
            if action == ABORT:
                return events, data, action, deadline
            joined = switching + data if type(data) is bytes else [switching, *data]
            return events, joined, action, deadline

        for front in fronts:
            rebind(front, h2)
            front.data_to_send = first_data_to_send
            front.flush = first_flush
        if leftover:
            h2.receive_data(leftover, self._now)
        self._enter(_CLOSED, None)

    def _body_arrived(self, stream: HttpStream, data: bytes) -> None:
        stream.body_arrived(data)
        limit = stream.max_request_body_size
        if stream.read_started and limit is not None and stream.body_received > limit:
            raise RequestBodyTooLarge(limit)
        self._wake(stream)

    def _wake(self, stream: HttpStream) -> None:
        events = self._events
        if not events or events[-1].stream is not stream:
            events.append(StreamUpdated(stream))

    def _body_rate_deadline(self) -> float | None:
        rate = self._limits.min_request_body_data_rate
        start = self._rate_start
        if rate is None or start is None or self._rate_paused_at is not None:
            return None
        stream = self._stream
        if stream is None or stream.body_complete_flag or self.phase is not _ACTIVE:
            return None
        received = stream.body_received
        return start + max(rate.grace_period, received / rate.bytes_per_second)

    def _pause_body_rate(self) -> None:
        if self._rate_start is not None and self._rate_paused_at is None:
            self._rate_paused_at = self._now

    # -- stream owner interface (called through HttpStream) -----------------------------------

    def stream_read_started(self, stream: HttpStream, now: float | None) -> None:
        if now is not None:
            self._now = now
        if stream is not self._stream or stream.aborted_flag:
            return
        limit = stream.max_request_body_size
        length = stream.request_content_length
        if limit is not None and (
            (length is not None and length > limit) or stream.body_received > limit
        ):
            self._fail(RequestBodyTooLarge(limit))
            return
        if (
            stream.expect_continue
            and not stream.response_started
            and not stream.body_complete_flag
            and not self._continue_sent
        ):
            self._continue_sent = True
            self._out.append(self._codec.send_informational(100, []))
        if not stream.body_complete_flag:
            self._rate_start = self._now

    def stream_body_consumed(self, stream: HttpStream, now: float | None) -> None:
        if now is not None:
            self._now = now
        if self._rate_paused_at is not None and self._rate_start is not None:
            self._rate_start += self._now - self._rate_paused_at
            self._rate_paused_at = None
        # Pump again only if there is something to pump: bytes in the codec, or a body whose
        # end the buffer limit held back.
        if (
            stream is self._stream
            and self.phase is _ACTIVE
            and (self._held_by_buffer_limit or self._codec.buffered_size)
        ):
            self._held_by_buffer_limit = False
            self._pump()

    def stream_can_write(self, stream: HttpStream) -> bool:
        # HTTP/1.1 keeps no per-stream buffer: the adapter's transport is the only brake.
        return True

    def stream_finished(self, stream: HttpStream) -> None:
        """Nothing to release: HTTP/1.1 serves one stream at a time and tracks it by phase."""

    def stream_can_transmit_file(self, stream: HttpStream) -> bool:
        # Only in plaintext, with a codec that can count bytes it does not see, on a transport
        # whose adapter can write files (core/files.py).
        transport = self._transport
        return (
            transport.sendfile
            and transport.tls is None
            and self._codec.can_frame_raw
            and stream is self._stream
            and self.phase is not _CLOSED
        )

    def stream_transmit_file(
        self, stream: HttpStream, segment: FileSegment, end: bool, now: float | None
    ) -> None:
        if now is not None:
            self._now = now
        if not self.stream_can_transmit_file(stream):
            raise LocalProtocolError("this connection cannot send a file raw; write its bytes")
        if not stream.response_started:
            self._send_head(stream, b"", False)
        count = segment.count
        if not count or not stream.body_allowed:
            if end:
                self._response_done(stream)
            return
        before, after = self._codec.frame_raw(count)
        if before:
            self._out.append(before)
        stream.bytes_sent += count
        stream.transmitting_file = True
        self._after_file = (after, end)
        self._before_file = len(self._out)
        # The client must read the file at the minimum response data rate, like any bytes.
        rate = self._limits.min_response_data_rate
        if rate is not None and self._write_deadline is None:
            self._write_deadline = self._now + max(rate.grace_period, count / rate.bytes_per_second)

    def stream_file_transmitted(self, stream: HttpStream, now: float | None) -> None:
        if now is not None:
            self._now = now
        after_file, self._after_file = self._after_file, None
        if self._before_file:  # the adapter wrote the file without taking what precedes it
            raise LocalProtocolError("write data_to_send() before the file, then report it sent")
        if not self._write_blocked:
            self._write_deadline = None
        if after_file is None or stream is not self._stream or stream.aborted_flag:
            self._wake(stream)
            return
        after, end = after_file
        if after:
            self._out.append(after)
        if end:
            self._response_done(stream)
        else:
            self._wake(stream)

    def stream_abort(self, stream: HttpStream) -> None:
        if stream is self._stream and self.phase is not _CLOSED:
            self._record(None, "aborted_by_app", "the app aborted the request")
            self._close()
        self._wake(stream)

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
        if not stream.response_started:
            self._send_head(stream, data, end and not trailers)
        else:
            self._send_data(stream, data, end)
        if end:
            if trailers:
                validate_response_headers(trailers)
            # Trailers need chunked framing; with Content-Length they are dropped.
            self._response_done(stream, trailers if self._chunked_response else None)

    def stream_informational(self, stream: HttpStream, status: int, headers: Headers) -> None:
        validate_response_headers(headers)
        if stream.http_version == "1.1":  # HTTP/1.0 clients do not expect 1xx responses
            self._out.append(self._codec.send_informational(status, headers))

    # -- internals: output --------------------------------------------------------------------

    def _send_head(self, stream: HttpStream, data: bytes, end: bool) -> None:
        facts = stream.begin_response()
        body_allowed = stream.body_allowed
        has_length = (
            facts.content_length is not None or facts.chunked or facts.framing_error is not None
        )
        # For HEAD, the length of the body the app produced (and we drop) is what GET would
        # have said.
        length = (
            len(data)
            if end and not has_length and (body_allowed or (stream.method == "HEAD" and data))
            else None
        )
        self._chunked_response = (
            not has_length and not end and body_allowed and stream.http_version == "1.1"
        )
        close = self._shutting_down or (
            not stream.body_complete_flag and self._closes_after(stream)
        )
        status = stream.status
        reason = stream.reason.encode("latin-1") if stream.reason else None
        stream.response_started = True
        codec = self._codec
        head = codec.send_response(
            status,
            reason,
            stream.response_headers,
            facts,
            self._context.engine_lines(facts.has_date, facts.has_server),
            length,
            close,
        )
        if data and body_allowed:
            body = codec.send_data(data)
            stream.bytes_sent += len(data)
            if len(body) < VECTORED_FROM:  # one bytes object for flush to hand over, as it would
                self._out.append(head + body)
            else:
                self._out += (head, body)
        else:
            self._out.append(head)

    def _closes_after(self, stream: HttpStream) -> bool:
        """Whether the connection will close after this response because of its request body:
        a 100-continue never sent, or more unread body than draining allows."""
        if stream.body_complete_flag:
            return False
        if stream.expect_continue and not self._continue_sent:
            return True
        length = stream.request_content_length
        if stream.read_started or length is None:
            return False
        return length - stream.body_received > self._limits.max_drain_size

    def _send_data(self, stream: HttpStream, data: bytes, end: bool) -> None:
        if data and stream.body_allowed:
            self._out.append(self._codec.send_data(data))
            stream.bytes_sent += len(data)

    def _response_done(self, stream: HttpStream, trailers: Headers | None = None) -> None:
        ending = self._codec.send_end(trailers)
        if ending:
            self._out.append(ending)
        stream.response_complete = True
        self._context.observer.response_completed(stream)
        stream.run_on_completed()
        self._wake(stream)
        if stream.body_complete_flag:
            self._finish_cycle()
            return
        # The app answered without reading the whole body.
        stream.discard_body()
        length = stream.request_content_length
        remaining = None if length is None else length - stream.body_received
        if (
            (stream.expect_continue and not self._continue_sent)
            or (remaining is not None and remaining > self._limits.max_drain_size)
            or self._limits.drain_timeout == 0
            or self._shutting_down
        ):
            self._close()
            return
        self._enter(_DRAINING, self._now + self._limits.drain_timeout)
        self._pump()

    def _finish_cycle(self) -> None:
        if self._shutting_down or not self._codec.keep_alive or self._peer_closed:
            self._close()
            return
        self._codec.start_next_cycle()
        self._stream = None
        self.phase = _IDLE
        self._phase_deadline = self._now + self._limits.keep_alive_timeout
        # Pipelined bytes wait in the codec; with none, there is nothing to pump (the peer's
        # EOF closed the connection above).
        if not self._answering_from_cache and self._codec.buffered_size:
            self._pump()

    # -- internals: failure -------------------------------------------------------------------

    def _fail(
        self,
        error: RemoteProtocolError | None,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        """Refuse the request in progress: answer with the error status if no response has
        started yet, then close. The app (if running) sees a disconnect."""
        stream = self._stream
        status: int | None = None
        if error is not None and (stream is None or not stream.response_started):
            status = error.status
            extra: Headers = []
            if status == 405:
                extra.append((b"allow", ALLOW_ALL_BUT_CONNECT))
            head_request = stream is not None and stream.method == "HEAD"
            self._out.append(error_response(status, str(error), self._context, extra, head_request))
        self._record(
            status,
            reason or (error.reason if error else "error"),
            message or (f"{error}{error.detail}" if error else ""),
        )
        self._close()
        if stream is not None and not stream.response_complete:
            if status is not None:
                stream.response_started = True
                stream.response_complete = True
                stream.status = status
            self._abort_stream(stream)

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

    def _abort_stream(self, stream: HttpStream) -> None:
        stream.aborted_flag = True
        self._wake(stream)

    def _close(self) -> None:
        if self.phase is not _CLOSED:
            self._enter(_CLOSED, None)
            self._rate_start = None
