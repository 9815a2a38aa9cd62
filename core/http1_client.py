"""The client side of HTTP/1.1, sans-IO: what the out-of-process module speaks to its app.

Theory of operation
-------------------
One ``ResponseReader`` reads the answer to one request. Bytes go in with ``feed`` (and
``feed_eof`` when the upstream closes); events come out:

    HEAD -> (1xx: ``Informational``, back to HEAD) -> ``ResponseStarted``
         -> ``Body``* -> ``ResponseEnded``

The head is refused when it breaks a bound (``max_head_size``, ``max_header_count``) or the
grammar (the same strictness as the server's request parser: CRLF only, no obs-fold, no
whitespace before the colon, no control bytes, one plain Content-Length, no Content-Length
together with Transfer-Encoding). The body is framed by RFC 9112 section 6.3, in this order:
responses to HEAD and 1xx/204/304 responses have none; ``chunked`` is decoded with the server's
``ChunkedFraming`` (so malformed chunks are refused the same way); ``Content-Length`` counts; a
response with neither ends when the upstream closes, and its connection is never reused.

``ResponseEnded.keep_alive`` says whether the connection may carry another request: the
response allowed it (HTTP/1.1 without ``close``, or HTTP/1.0 with ``keep-alive``), its length
was known, and no byte arrived after its end. Everything the upstream does wrong raises
``UpstreamProtocolError``; a proxy answers that with 502.

Requests go the other way with ``serialize_request_head``, ``encode_chunk`` and ``LAST_CHUNK``.
``strip_hop_by_hop`` removes the headers that describe one connection and must not be forwarded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import LocalProtocolError, RemoteProtocolError, TiercelError
from .http1_chunked import ChunkedFraming
from .http1_head import _BAD_VALUE_BYTE, _DIGITS, _HEADER_NAME

Headers = list[tuple[bytes, bytes]]

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([\t \x21-\x7e\x80-\xff]*))?")
_METHOD = _HEADER_NAME  # a method is a token, as a field name is (RFC 9110 9.1, 5.1)
_TARGET = re.compile(rb"[\x21-\x7e]+")

# RFC 9110 7.6.1 plus the pre-standard names still seen in the wild.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
LAST_CHUNK = b"0\r\n\r\n"


class UpstreamProtocolError(TiercelError):
    """The upstream server broke HTTP/1.1 (or a bound); a proxy answers 502."""


@dataclass(frozen=True, slots=True)
class Informational:
    """A 1xx response other than 101; the final response follows."""

    status: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    status: int
    reason: bytes
    http_version: bytes  # b"1.1" or b"1.0"
    headers: Headers  # names lower-cased, values without surrounding whitespace
    content_length: int | None  # None when chunked or close-delimited
    chunked: bool


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes


@dataclass(frozen=True, slots=True)
class ResponseEnded:
    keep_alive: bool


ResponseEvent = Informational | ResponseStarted | Body | ResponseEnded


def strip_hop_by_hop(headers: Headers) -> Headers:
    """``headers`` without the hop-by-hop ones and those the Connection header names."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(t.strip(b" \t").lower() for t in value.split(b","))
    return [
        (name, value)
        for name, value in headers
        if name.lower() not in HOP_BY_HOP and name.lower() not in named
    ]


def serialize_request_head(method: str, target: bytes, headers: Headers) -> bytes:
    """An HTTP/1.1 request head. The caller supplies Host and the framing headers."""
    raw_method = method.encode("ascii")
    if not _METHOD.fullmatch(raw_method):
        raise LocalProtocolError(f"invalid request method {method!r}")
    if not _TARGET.fullmatch(target):
        raise LocalProtocolError(f"invalid request target {target!r}")
    lines = [raw_method + b" " + target + b" HTTP/1.1"]
    for name, value in headers:
        if not _HEADER_NAME.fullmatch(name):
            raise LocalProtocolError(f"invalid header name {name!r}")
        if _BAD_VALUE_BYTE.search(value):
            raise LocalProtocolError(f"control character in the value of header {name!r}")
        lines.append(name + b": " + value)
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked request body; empty data encodes to nothing (not the end)."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


_HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE, _DONE = range(5)


class ResponseReader:
    """Reads the response to one request (see the module docstring)."""

    def __init__(
        self,
        request_method: str,
        *,
        max_head_size: int = 65_536,
        max_header_count: int = 200,
    ) -> None:
        self._head_request = request_method.upper() == "HEAD"
        self._max_head_size = max_head_size
        self._max_header_count = max_header_count
        self._state = _HEAD
        self._buffer = bytearray()
        self._left = 0
        self._chunked: ChunkedFraming | None = None
        self._keep_alive = True
        self.trailing_bytes = b""  # bytes after the end of the response (never valid)

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def started(self) -> bool:
        """True once the final response head has been read."""
        return self._state != _HEAD

    def feed(self, data: bytes) -> list[ResponseEvent]:
        if self._state == _DONE:
            self.trailing_bytes += data
            return []
        events: list[ResponseEvent] = []
        if self._state == _HEAD:
            self._buffer += data
            while self._state == _HEAD:
                end = self._buffer.find(b"\r\n\r\n")
                if end == -1:
                    if len(self._buffer) > self._max_head_size:
                        raise UpstreamProtocolError(
                            f"response head larger than {self._max_head_size} bytes"
                        )
                    return events
                if end + 4 > self._max_head_size:
                    raise UpstreamProtocolError(
                        f"response head larger than {self._max_head_size} bytes"
                    )
                head = bytes(self._buffer[: end + 4])
                del self._buffer[: end + 4]
                events.append(self._parse_head(head))
            data = bytes(self._buffer)
            self._buffer.clear()
            if self._state == _DONE:  # a response without a body
                self.trailing_bytes += data
                events.append(ResponseEnded(self._end_keep_alive()))
                return events
        if data:
            self._body(data, events)
        return events

    def feed_eof(self) -> list[ResponseEvent]:
        """The upstream closed its side."""
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
            return [ResponseEnded(keep_alive=False)]
        if self._state == _DONE:
            return []
        where = "before the response head" if self._state == _HEAD else "inside the body"
        raise UpstreamProtocolError(f"the upstream closed the connection {where}")

    def _end_keep_alive(self) -> bool:
        return self._keep_alive and not self.trailing_bytes

    def _body(self, data: bytes, events: list[ResponseEvent]) -> None:
        state = self._state
        if state == _LENGTH:
            take = min(self._left, len(data))
            if take:
                events.append(Body(data[:take]))
            self._left -= take
            if not self._left:
                self._state = _DONE
                self.trailing_bytes += data[take:]
                events.append(ResponseEnded(self._end_keep_alive()))
        elif state == _CHUNKED:
            framing = self._chunked
            assert framing is not None
            payload: list[bytes] = []
            try:
                used = framing.scan(data, payload)
            except RemoteProtocolError as exc:
                raise UpstreamProtocolError(str(exc)) from None
            if payload:
                events.append(Body(b"".join(payload)))
            if framing.done:
                self._state = _DONE
                self.trailing_bytes += data[used:]
                events.append(ResponseEnded(self._end_keep_alive()))
        elif state == _UNTIL_CLOSE:
            events.append(Body(data))

    def _parse_head(self, head: bytes) -> Informational | ResponseStarted:
        lines = head[:-4].split(b"\r\n")
        if b"\n" in head[:-4].replace(b"\r\n", b"") or b"\r" in head[:-4].replace(b"\r\n", b""):
            raise UpstreamProtocolError("bare CR or LF in the response head")
        match = _STATUS_LINE.fullmatch(lines[0])
        if match is None:
            raise UpstreamProtocolError(f"malformed status line {lines[0][:100]!r}")
        minor, code, reason = match.groups()
        status = int(code)
        if len(lines) - 1 > self._max_header_count:
            raise UpstreamProtocolError(f"more than {self._max_header_count} response headers")
        headers: Headers = []
        content_length: int | None = None
        transfer_encoding: bytes | None = None
        tokens: list[bytes] = []
        for line in lines[1:]:
            colon = line.find(b":")
            if colon <= 0 or not _HEADER_NAME.fullmatch(line[:colon]):
                raise UpstreamProtocolError(f"malformed response header line {line[:100]!r}")
            name = line[:colon].lower()
            value = line[colon + 1 :].strip(b" \t")
            if _BAD_VALUE_BYTE.search(value):
                raise UpstreamProtocolError("control character in a response header value")
            headers.append((name, value))
            if name == b"content-length":
                if content_length is not None or not _DIGITS.fullmatch(value):
                    raise UpstreamProtocolError("invalid or repeated Content-Length")
                content_length = int(value)
            elif name == b"transfer-encoding":
                if transfer_encoding is not None:
                    raise UpstreamProtocolError("more than one Transfer-Encoding header")
                transfer_encoding = value.lower()
            elif name == b"connection":
                tokens.extend(t.strip(b" \t").lower() for t in value.split(b","))
        if 100 <= status < 200:
            if status == 101:
                raise UpstreamProtocolError("101 Switching Protocols to a request without Upgrade")
            return Informational(status, headers)
        http_version = b"1." + minor
        if http_version == b"1.1":
            self._keep_alive = b"close" not in tokens
        else:
            self._keep_alive = b"keep-alive" in tokens and b"close" not in tokens
        if transfer_encoding is not None and content_length is not None:
            raise UpstreamProtocolError("both Content-Length and Transfer-Encoding in a response")
        chunked = False
        if self._head_request or status in (204, 304):
            self._state = _DONE
        elif transfer_encoding is not None:
            if transfer_encoding.rsplit(b",", 1)[-1].strip(b" \t") == b"chunked":
                if transfer_encoding != b"chunked":
                    raise UpstreamProtocolError("transfer codings other than 'chunked'")
                chunked = True
                self._chunked = ChunkedFraming()
                self._state = _CHUNKED
            else:
                self._keep_alive = False
                self._state = _UNTIL_CLOSE
        elif content_length is not None:
            self._left = content_length
            self._state = _LENGTH if content_length else _DONE
        else:
            self._keep_alive = False
            self._state = _UNTIL_CLOSE
        return ResponseStarted(
            status=status,
            reason=reason or b"",
            http_version=http_version,
            headers=headers,
            content_length=None if chunked or self._state == _UNTIL_CLOSE else content_length,
            chunked=chunked,
        )
