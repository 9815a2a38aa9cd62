"""Strict, incremental checking of chunked framing (RFC 9112 section 7.1).

h11 accepts any byte in a chunk extension and parses trailers with its lenient line splitter
(bare LF, obs-fold); both have been smuggling vectors elsewhere. ``ChunkedFraming`` walks the
same bytes first and refuses what the grammar does not allow. It also finds the exact end of a
chunked body, so the codec never hands bytes of the next request to the body parser.

States: SIZE (reading a chunk-size line) -> DATA (n bytes) -> DATA_CRLF -> SIZE ...; a size of
zero leads to TRAILERS (field lines until an empty line) -> DONE.
"""

from __future__ import annotations

import re

from .errors import RemoteProtocolError

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_SIZE_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})((?:[ \t]*;[ \t]*"
    + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN
    + rb"|"
    + _QUOTED
    + rb"))?)*)[ \t]*"
)
_FIELD_LINE = re.compile(_TOKEN + rb":[ \t]*[^\x00-\x08\x0a-\x1f\x7f]*")
_FRAMING_FIELDS = (b"content-length", b"transfer-encoding")
# A chunk-size line (with extensions) or a trailer line longer than this is refused.
MAX_LINE = 4096

_SIZE, _DATA, _DATA_CRLF, _TRAILERS, _DONE = range(5)


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed chunked body: {message}", 400, "bad_chunked_body")


class ChunkedFraming:
    __slots__ = ("_left", "_line", "_state", "trailer_bytes")

    def __init__(self, max_trailer_bytes: int = 32_768) -> None:
        self._state = _SIZE
        self._left = 0
        self._line = bytearray()
        self.trailer_bytes = max_trailer_bytes

    def _check_line_length(self, state: int) -> None:
        # A trailer section counts against the header limit however its bytes arrive,
        # partial lines included, so the answer (431) does not depend on packet boundaries.
        if state == _TRAILERS and len(self._line) > self.trailer_bytes:
            raise RemoteProtocolError("trailer section too large", 431, "headers_too_large")
        if len(self._line) > MAX_LINE:
            raise _bad("line too long")

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def scan(self, data: bytes | bytearray, payload: list[bytes] | None = None) -> int:
        """Check ``data``; return how many of its bytes belong to this body (all of them
        unless the body ends inside it). Raises ``RemoteProtocolError`` on bad framing.
        With ``payload``, the chunk data found is appended to it (decoding, not just checking).
        """
        position = 0
        size = len(data)
        while position < size and self._state != _DONE:
            state = self._state
            if state == _DATA:
                step = min(self._left, size - position)
                if payload is not None:
                    payload.append(bytes(data[position : position + step]))
                self._left -= step
                position += step
                if not self._left:
                    self._state = _DATA_CRLF
                continue
            if state == _DATA_CRLF:
                needed = 2 - len(self._line)
                self._line += data[position : position + needed]
                position += min(needed, size - position)
                # Checked byte by byte, as h11 does: a bad first byte is refused at once.
                if not b"\r\n".startswith(self._line):
                    raise _bad("chunk data not followed by CRLF")
                if len(self._line) == 2:
                    self._line.clear()
                    self._state = _SIZE
                continue
            end = data.find(b"\n", position)
            if end == -1:
                self._line += data[position:]
                position = size
                self._check_line_length(state)
                continue
            self._line += data[position : end + 1]
            position = end + 1
            self._check_line_length(state)
            line = bytes(self._line)
            self._line.clear()
            if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
                raise _bad("bare CR or LF; lines must end with CRLF")
            line = line[:-2]
            if state == _SIZE:
                match = _SIZE_LINE.fullmatch(line)
                if match is None:
                    raise _bad("invalid chunk size or chunk extension")
                if match.group(2)[:1] in (b" ", b"\t"):
                    # RFC 9112 allows BWS here, but h11 refuses it; as strict as the reference.
                    raise _bad("whitespace between the chunk size and a chunk extension")
                self._left = int(match.group(1), 16)
                self._state = _DATA if self._left else _TRAILERS
            else:  # _TRAILERS
                if not line:
                    self._state = _DONE
                    continue
                self.trailer_bytes -= len(line) + 2
                if line[:1] in (b" ", b"\t"):
                    raise _bad("obsolete line folding in the trailer section")
                if _FIELD_LINE.fullmatch(line) is None:
                    raise _bad("invalid trailer field")
                if line[: line.index(b":")].lower() in _FRAMING_FIELDS:
                    # Never valid as trailers (RFC 9110 6.5.1); h11 refuses most of their values.
                    raise _bad("a framing field (Content-Length, Transfer-Encoding) as trailer")
        return position


# -- writing: the framing a response body needs when the server frames it itself ------------

LAST_CHUNK = b"0\r\n\r\n"


def chunk_frame(data: bytes) -> list[bytes]:
    """One piece of a chunked body as [size line, data, CRLF]; nothing for empty data (an
    empty chunk would end the body). Used where bytes are framed outside a codec (HTTP.sys
    leaves a streamed response's framing to the server)."""
    return [b"%x\r\n" % len(data), data, b"\r\n"] if data else []
