"""The fast HTTP/1.1 codec: the ``Http1Codec`` interface without h11 on the hot path.

Theory of operation
-------------------
Requests: the same strict gate as the reference codec (``http1_head`` for heads,
``http1_chunked`` for chunked framing) does all the parsing, so there is no second parser to
disagree with it; fixed-length bodies are sliced straight out of the inbox. One request at a
time, as in ``H11Codec``: after a request's body the codec answers PAUSED until
``start_next_cycle``, so pipelined bytes stay unparsed behind an unfinished response.

Responses are built from prebuilt status lines. Framing is decided once, at the head, the way
h11 decides it: no body for HEAD, 204 and 304; the app's Content-Length if it gave one
(checked against what it sends); otherwise chunked for HTTP/1.1 and close-delimited for
HTTP/1.0. ``Connection: close`` is added whenever the connection will not be reused.

Clients repeat themselves: a poller, a health check or a load generator sends the same head
byte for byte, request after request, on every connection. Heads that the one-pass parser
accepts are remembered by their exact bytes in a cache the server's connections share
(``RequestHeads``), so a repeated head costs a dictionary lookup instead of a parse. The result
depends only on those bytes and on the limits, which are the server's own, so a remembered head
is exactly what parsing would give. A ``RequestHead`` is never changed after parsing; the
connection gives each request its own copy of the header list. A read that is exactly a
remembered head (the usual keep-alive request) is looked up as it came and never copied into
the inbox; it waits in ``_ready`` until ``next_event`` and counts in ``buffered_size``.

``tests/engine`` runs this codec and ``H11Codec`` through the same tests, and a differential
property test feeds both the same generated and mutated byte streams.
"""

from __future__ import annotations

from .caches import BoundedCache
from .config import Limits
from .errors import LocalProtocolError, RemoteProtocolError
from .headers import HeaderFacts
from .http1_chunked import LAST_CHUNK, ChunkedFraming
from .http1_codec import CLOSED, END_OF_BODY, NEED_DATA, PAUSED, BodyData, CodecEvent, Headers
from .http1_head import RequestHead, find_head_end, parse_head, parse_simple_head
from .status import STATUS_LINES_11, reason_phrase

_BODY_SLICE = 262_144

# Remembered heads: at most this many, of at most this many bytes each (a bound on memory,
# whatever the clients send; longer heads, with large cookies say, are parsed every time).
CACHED_HEADS = 256
CACHED_HEAD_SIZE = 2048

RequestHeads = BoundedCache[bytes, RequestHead]

# Response framing modes.
_NONE, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(4)


class FastCodec:
    __slots__ = (
        "_body_left",
        "_chunked",
        "_close_after",
        "_direct",
        "_direct_size",
        "_eof",
        "_framing",
        "_head",
        "_heads",
        "_inbox",
        "_limits",
        "_ready",
        "_ready_head",
        "_request_done",
        "_response_done",
        "_response_left",
        "_scanned",
        "_simple_head_limit",
    )

    def __init__(self, limits: Limits, heads: RequestHeads | None = None) -> None:
        self._limits = limits
        # Shared by the connections of one server (same limits); a codec of its own otherwise.
        self._heads = BoundedCache(CACHED_HEADS) if heads is None else heads
        self._inbox = bytearray()
        self._eof = False
        self._head: RequestHead | None = None
        self._body_left = 0
        self._chunked: ChunkedFraming | None = None
        self._request_done = False
        self._framing = _NONE
        self._response_left = 0
        self._response_done = False
        self._close_after = False
        self._scanned = 0  # bytes of a partial head already checked
        # Body bytes that arrived as whole reads while the inbox was empty (receive_data).
        self._direct: list[bytes] = []
        self._direct_size = 0
        # A read that was exactly a remembered head, kept as it came until next_event.
        self._ready = b""
        self._ready_head: RequestHead | None = None
        self._simple_head_limit = (
            min(limits.max_request_line_size, limits.max_request_headers_total_size) + 4
        )

    # -- requests -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif (
            self._head is None
            and type(data) is bytes  # a bytearray or memoryview from an embedder is no key
            and len(data) <= CACHED_HEAD_SIZE
            and not self._inbox
            and not self._ready
            and (head := self._heads.get(data)) is not None
        ):
            # A client repeating its request on a keep-alive connection: the whole read is a
            # head seen before. It never goes through the inbox.
            self._ready, self._ready_head = data, head
        elif (
            not self._inbox
            and self._chunked is None
            and self._head is not None
            and len(data) <= self._body_left - self._direct_size
        ):
            # All of it is Content-Length body: handed over as it is, never copied.
            self._direct.append(data)
            self._direct_size += len(data)
        else:
            self._inbox += data

    @property
    def buffered_size(self) -> int:
        return len(self._inbox) + self._direct_size + len(self._ready)

    def next_event(self) -> CodecEvent:
        head = self._head
        if head is None:
            return self._next_head()
        if self._request_done:
            return PAUSED
        inbox = self._inbox
        chunked = self._chunked
        if chunked is None:
            if not self._body_left:
                self._request_done = True
                return END_OF_BODY
            direct = self._direct
            if direct:  # received whole, before anything in the inbox
                data = direct.pop(0)
                self._direct_size -= len(data)
            elif not inbox:
                return self._need_body()
            elif self._body_left >= len(inbox) <= _BODY_SLICE:
                data = bytes(inbox)  # one copy, where slicing then converting makes two
                inbox.clear()
            else:
                size = min(self._body_left, len(inbox), _BODY_SLICE)
                with memoryview(inbox) as view:
                    data = bytes(view[:size])
                del inbox[:size]
            self._body_left -= len(data)
            return BodyData(data)
        while True:
            if chunked.done:
                self._request_done = True
                return END_OF_BODY
            if not inbox:
                return self._need_body()
            payload: list[bytes] = []
            used = chunked.scan(inbox[:_BODY_SLICE], payload)
            del inbox[:used]
            if payload:
                data = payload[0] if len(payload) == 1 else b"".join(payload)
                if data:
                    return BodyData(data)

    def _need_body(self) -> CodecEvent:
        if self._eof:
            raise RemoteProtocolError("the connection closed before the request body ended")
        return NEED_DATA

    def _next_head(self) -> CodecEvent:
        head = self._ready_head
        if head is not None:  # it came before anything in the inbox
            self._ready, self._ready_head = b"", None
            return self._begin(head)
        inbox = self._inbox
        if not inbox:
            return CLOSED if self._eof else NEED_DATA
        # A head that arrives whole takes the one-pass parser; one that trickles in is scanned
        # incrementally by find_head_end (``_scanned``), so it never costs quadratic time.
        blank = -1 if self._scanned else inbox.find(b"\r\n\r\n", 0, self._simple_head_limit)
        if blank > 0:
            end = blank + 4
            if end <= CACHED_HEAD_SIZE:
                key = bytes(inbox) if len(inbox) == end else bytes(inbox[:end])
                head = self._heads.get(key)
                if head is None and (head := parse_simple_head(inbox, blank, self._limits)):
                    self._heads.remember(key, head)
            else:
                head = parse_simple_head(inbox, blank, self._limits)
            if head is not None:
                del inbox[:end]
                self._scanned = 0
                return self._begin(head)
        end = find_head_end(inbox, self._limits, self._scanned)
        if end == -1:
            self._scanned = len(inbox)
            if self._eof:
                if inbox.strip(b"\r\n"):
                    raise RemoteProtocolError("connection closed in the middle of a request head")
                return CLOSED
            return NEED_DATA
        self._scanned = 0
        head = parse_head(bytes(inbox[:end]), self._limits)
        del inbox[:end]
        return self._begin(head)

    def _begin(self, head: RequestHead) -> RequestHead:
        self._head = head
        if head.chunked:
            self._chunked = ChunkedFraming(self._limits.max_request_headers_total_size)
            self._request_done = False
        else:
            self._body_left = head.content_length or 0
            self._request_done = not self._body_left
        return head

    @property
    def keep_alive(self) -> bool:
        head = self._head
        return (
            head is not None
            and head.keep_alive
            and self._request_done
            and self._response_done
            and not self._close_after
        )

    def start_next_cycle(self) -> None:
        self._head = None
        self._chunked = None
        self._request_done = False
        self._body_left = 0
        self._framing = _NONE
        self._response_done = False
        self._close_after = False

    def take_remaining(self) -> bytes:
        remaining = b"".join([self._ready, *self._direct, self._inbox])
        self._ready, self._ready_head = b"", None
        self._direct.clear()
        self._direct_size = 0
        self._inbox.clear()
        return remaining

    # -- responses ------------------------------------------------------------------------

    def send_informational(self, status: int, headers: Headers) -> bytes:
        lines = [STATUS_LINES_11[status]]
        for name, value in headers:
            lines += [name, b": ", value, b"\r\n"]
        lines.append(b"\r\n")
        return b"".join(lines)

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
        head = self._head
        if head is None:
            raise LocalProtocolError("no request to respond to")
        if facts.framing_error is not None:
            raise LocalProtocolError(facts.framing_error)
        chunked = facts.chunked
        # HTTP/1.0 keep-alive is not offered (as in h11): such a connection closes after one.
        close = (
            close or not head.keep_alive or head.http_version == b"1.0" or facts.connection_close
        )
        if reason is None and status in STATUS_LINES_11:
            lines = [STATUS_LINES_11[status], engine_lines]
        else:
            lines = [
                b"HTTP/1.1 %d %s\r\n"
                % (status, reason_phrase(status) if reason is None else reason),
                engine_lines,
            ]
        if length is None:
            length = facts.content_length
        else:
            lines.append(b"content-length: %d\r\n" % length)
        if head.method == b"HEAD" or status in (204, 304):
            self._framing = _NONE
        elif length is not None:
            self._framing = _LENGTH
            self._response_left = length
        elif head.http_version == b"1.1":
            self._framing = _CHUNKED
        else:
            self._framing = _UNTIL_CLOSE
            close = True
        self._close_after = close
        if close and facts.has_connection:
            for name, value in headers:
                if name.lower() != b"connection":  # replaced by our own connection: close
                    lines += [name, b": ", value, b"\r\n"]
        else:
            lines.append(facts.lines)
        if self._framing == _CHUNKED and not chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"connection: close\r\n\r\n" if close else b"\r\n")
        return b"".join(lines)

    def send_data(self, data: bytes) -> bytes:
        framing = self._framing
        if not data or framing == _NONE:
            return b""
        if framing == _CHUNKED:
            return b"%x\r\n%b\r\n" % (len(data), data)
        if framing == _LENGTH:
            self._response_left -= len(data)
            if self._response_left < 0:
                raise LocalProtocolError("Too much data for declared Content-Length")
        return data

    can_frame_raw = True

    def frame_raw(self, count: int) -> tuple[bytes, bytes]:
        framing = self._framing
        if not count or framing == _NONE:
            return b"", b""
        if framing == _CHUNKED:
            return b"%x\r\n" % count, b"\r\n"
        if framing == _LENGTH:
            self._response_left -= count
            if self._response_left < 0:
                raise LocalProtocolError("Too much data for declared Content-Length")
        return b"", b""

    def send_end(self, trailers: Headers | None = None) -> bytes:
        self._response_done = True
        framing = self._framing
        if framing == _CHUNKED:
            if not trailers:
                return LAST_CHUNK
            lines = [b"0\r\n"]
            for name, value in trailers:
                lines += [name, b": ", value, b"\r\n"]
            lines.append(b"\r\n")
            return b"".join(lines)
        if trailers:
            raise LocalProtocolError("trailers need chunked framing")
        if framing == _LENGTH and self._response_left:
            raise LocalProtocolError("Too little data for declared Content-Length")
        return b""
