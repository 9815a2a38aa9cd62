"""The HTTP/1.1 codec interface and its reference implementation on h11.

A codec turns bytes into request events and response commands into bytes, one request/response
cycle at a time. The connection engine (``http1.py``) owns everything else: timeouts, limits,
streams, draining, error responses. A faster codec can replace ``H11Codec`` as long as it keeps
this interface and passes the same tests.

Theory of operation of ``H11Codec``: received bytes wait in our own inbox. While a request head
is awaited, ``http1_head`` finds and validates it there first (h11 is more lenient than we want
to be), and only then hands the head to h11. Body bytes are handed over in bounded slices when
h11 asks for more, so h11 never holds more than one request's worth of bytes. After a cycle ends,
whatever h11 still holds (pipelined bytes) returns to the front of the inbox and a fresh h11
connection starts the next cycle. So bytes that follow a request are never parsed unless that
request ended cleanly: after any error the engine closes, and the rest is never looked at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias

import h11

from .config import Limits
from .errors import LocalProtocolError, RemoteProtocolError
from .headers import HeaderFacts
from .http1_chunked import ChunkedFraming
from .http1_head import RequestHead, find_head_end, parse_head
from .status import reason_phrase


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA: Final = _Sentinel("NEED_DATA")
PAUSED: Final = _Sentinel("PAUSED")  # the request is complete; waiting for the response to end
CLOSED: Final = _Sentinel("CLOSED")  # the peer closed cleanly between requests


@dataclass(frozen=True, slots=True)
class BodyData:
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfBody:
    pass


END_OF_BODY: Final = EndOfBody()

CodecEvent: TypeAlias = RequestHead | BodyData | EndOfBody | _Sentinel
Headers = list[tuple[bytes, bytes]]


class Http1Codec(Protocol):
    def receive_data(self, data: bytes) -> None:
        """Add received bytes; ``b""`` means the peer closed its side."""

    def next_event(self) -> CodecEvent:
        """The next request event, or NEED_DATA / PAUSED / CLOSED. Raises RemoteProtocolError."""

    @property
    def buffered_size(self) -> int:
        """Received bytes not yet turned into events."""

    @property
    def keep_alive(self) -> bool:
        """Whether the connection can carry another request after this cycle."""

    def send_informational(self, status: int, headers: Headers) -> bytes: ...

    def send_response(  # noqa: PLR0917 - per response: positional is cheaper (HttpStream)
        self,
        status: int,
        reason: bytes | None,
        headers: Headers,
        facts: HeaderFacts,
        engine_lines: bytes,
        length: int | None,
        close: bool,
    ) -> bytes:
        """The response head: ``engine_lines`` (the engine's own header lines, serialised:
        Date, Server) then the app's ``headers``, which ``facts`` describes (core/headers.py).
        ``reason`` None: the standard phrase. ``length``: a Content-Length the engine adds (a
        whole body the app gave none for). ``close``: the engine closes the connection after
        this response (``Connection: close``)."""

    def send_data(self, data: bytes) -> bytes: ...

    def send_end(self, trailers: Headers | None = None) -> bytes: ...

    # Whether frame_raw works: the codec can count body bytes it does not see.
    can_frame_raw: bool

    def frame_raw(self, count: int) -> tuple[bytes, bytes]:
        """Account for ``count`` body bytes the adapter writes itself (a file); the framing
        bytes to write before and after them."""
        ...

    def start_next_cycle(self) -> None: ...

    def take_remaining(self) -> bytes:
        """Every received byte after the current request, removed (for a protocol switch)."""
        ...


_CHUNKED_SLICE = 65_536


class H11Codec:
    """The reference codec: strict head validation in front of h11."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._inbox = bytearray()
        self._eof = False
        self._h11 = self._new_h11()
        self._head: RequestHead | None = None
        self._content_left = 0  # Content-Length bytes not yet handed to h11
        self._chunked: ChunkedFraming | None = None
        self._done = False

    def _new_h11(self) -> h11.Connection:
        # Our head parser enforces the size limits; this bound only covers chunk headers.
        return h11.Connection(
            h11.SERVER, max_incomplete_event_size=self._limits.max_request_headers_total_size
        )

    def receive_data(self, data: bytes) -> None:
        if data:
            self._inbox += data
        else:
            self._eof = True

    @property
    def buffered_size(self) -> int:
        return len(self._inbox)

    @property
    def keep_alive(self) -> bool:
        return (
            self._h11.our_state is h11.DONE
            and self._h11.their_state is h11.DONE
            and (self._head is None or self._head.keep_alive)
        )

    def next_event(self) -> CodecEvent:
        if self._head is None:
            return self._next_head()
        if self._done:
            return PAUSED
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise RemoteProtocolError(f"malformed request body: {exc}", 400) from None
            if event is h11.NEED_DATA:
                if not self._feed_body():
                    return NEED_DATA
                continue
            if isinstance(event, h11.Data):
                return BodyData(bytes(event.data))
            if isinstance(event, h11.EndOfMessage):
                self._done = True
                return END_OF_BODY
            raise RemoteProtocolError(f"unexpected request event {type(event).__name__}", 400)

    def _next_head(self) -> CodecEvent:
        end = find_head_end(self._inbox, self._limits)
        if end == -1:
            if self._eof:
                if self._inbox.strip(b"\r\n"):
                    raise RemoteProtocolError("connection closed in the middle of a request head")
                return CLOSED
            return NEED_DATA
        raw = bytes(self._inbox[:end])
        head = parse_head(raw, self._limits)
        del self._inbox[:end]
        try:
            # find_head_end skipped empty lines before the request line (RFC 9112 2.2); h11
            # would refuse them, so it gets the head without them.
            self._h11.receive_data(raw.lstrip(b"\r\n"))
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise RemoteProtocolError(f"malformed request: {exc}", exc.error_status_hint) from None
        if not isinstance(event, h11.Request):
            raise RemoteProtocolError("malformed request head", 400)
        self._head = head
        self._chunked = (
            ChunkedFraming(self._limits.max_request_headers_total_size) if head.chunked else None
        )
        self._content_left = head.content_length or 0
        self._done = not head.has_body
        if self._done:
            # h11 still has to see the end of an empty body.
            self._h11.next_event()
        return head

    def _feed_body(self) -> bool:
        """Give h11 the next slice of body bytes; False when none are available yet."""
        if not self._inbox:
            if self._eof:
                self._h11.receive_data(b"")
                return True  # h11 will now report the incomplete body as an error
            return False
        framing = self._chunked
        if framing is None:
            size = min(self._content_left, len(self._inbox))
            self._content_left -= size
        else:
            if framing.done:
                return False  # h11 has the whole body; more bytes belong to the next request
            # Strict framing first; it also stops exactly where the body ends.
            size = framing.scan(bytes(self._inbox[:_CHUNKED_SLICE]))
        self._h11.receive_data(bytes(self._inbox[:size]))
        del self._inbox[:size]
        return True

    def send_informational(self, status: int, headers: Headers) -> bytes:
        return self._send(
            h11.InformationalResponse(
                status_code=status, headers=headers, reason=reason_phrase(status)
            )
        )

    def send_response(  # noqa: PLR0917 - per response: positional is cheaper (HttpStream)
        self,
        status: int,
        reason: bytes | None,
        headers: Headers,
        facts: HeaderFacts,
        engine_lines: bytes,
        length: int | None,
        close: bool,
    ) -> bytes:
        extra = [
            (name, value)
            for name, _, value in (line.partition(b": ") for line in engine_lines.split(b"\r\n"))
            if name
        ]
        if length is not None:
            extra.append((b"content-length", b"%d" % length))
        if close:
            extra.append((b"connection", b"close"))
        return self._send(
            h11.Response(
                status_code=status,
                headers=[*extra, *headers],
                reason=reason_phrase(status) if reason is None else reason,
            )
        )

    def send_data(self, data: bytes) -> bytes:
        return self._send(h11.Data(data=data))

    def send_end(self, trailers: Headers | None = None) -> bytes:
        return self._send(h11.EndOfMessage(headers=trailers or []))

    # h11 counts the body bytes it frames itself, so every byte must pass through it.
    can_frame_raw = False

    def frame_raw(self, count: int) -> tuple[bytes, bytes]:
        raise LocalProtocolError("the h11 codec cannot frame bytes it does not see")

    def _send(self, event: h11.Event) -> bytes:
        try:
            return self._h11.send(event) or b""
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc)) from None

    def take_remaining(self) -> bytes:
        leftover, _ = self._h11.trailing_data
        remaining = leftover + bytes(self._inbox)
        self._inbox.clear()
        self._h11 = self._new_h11()
        return remaining

    def start_next_cycle(self) -> None:
        leftover, _ = self._h11.trailing_data
        if leftover:
            self._inbox[:0] = leftover
        self._h11 = self._new_h11()
        self._head = None
        self._chunked = None
        self._done = False
        self._content_left = 0
