"""Strict parsing of an HTTP/1.1 request head (RFC 9112 section 2-3, RFC 9110 section 5-7).

This is the gate every request passes before a codec sees it. It is deliberately stricter than
the RFC's "MAY accept" clauses, because every leniency here has been a request-smuggling bug
somewhere (see the advisories in the project's references): bare LF, obs-fold, whitespace
before the colon, Content-Length lists or signs, several Transfer-Encoding headers, CL together
with TE, and control bytes are all refused.

``find_head_end`` decides when a head is complete and which limit (414 vs 431) a head that is too
long breaks; ``parse_head`` turns the complete head into a ``RequestHead`` or raises
``RemoteProtocolError`` with the status to answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from .config import Limits
from .errors import RemoteProtocolError

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([^ ]+) (HTTP/[0-9]\.[0-9])")
_HEADER_NAME = re.compile(_TOKEN)
# Field values: VCHAR, obs-text, SP and HTAB; no other control byte (RFC 9110 5.5).
_BAD_VALUE_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Request targets: visible ASCII only (RFC 9112 3.2, RFC 3986); '#' never appears in a target.
_BAD_TARGET_BYTE = re.compile(rb"[^\x21-\x7e]|#")
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
# A whole header section that needs no per-line checks: every line a token, a colon and a
# value of VCHAR/obs-text with inner SP/HTAB, optional whitespace around it. Written so that it
# cannot backtrack more than linearly (no two adjacent runs can match the same bytes).
_FIELD_VALUE = rb"[ \t]*((?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?)[ \t]*\r\n"
_FIELD = re.compile(rb"(" + _TOKEN + rb"):" + _FIELD_VALUE)
_FIELDS = re.compile(rb"(?:" + _TOKEN + rb":" + _FIELD_VALUE.replace(b"((", b"(?:(") + rb")*")
# A whole common head: method, origin-form target (visible ASCII but '#'), HTTP/1.0 or 1.1,
# then header lines as _FIELDS accepts them.
_SIMPLE_HEAD = re.compile(
    rb"(" + _TOKEN + rb") (/[\x21\x22\x24-\x7e]*) HTTP/1\.([01])\r\n(" + _FIELDS.pattern + rb")\r\n"
)
_DIGITS = re.compile(rb"[0-9]{1,18}")
_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+\-.]*)://([^/?]*)([^?]*)(?:\?(.*))?", re.DOTALL)

ALLOW_ALL_BUT_CONNECT = b"GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE"


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    http_version: bytes  # b"1.1" or b"1.0"
    headers: list[tuple[bytes, bytes]]  # names lower-cased, values without surrounding OWS
    raw_path: bytes
    query_string: bytes
    host: bytes | None
    content_length: int | None
    chunked: bool
    keep_alive: bool
    expect_continue: bool
    # What the engine's streams take as text, decoded once per head: a remembered head
    # (http1_fast) serves many requests.
    method_name: str  # "GET"
    version_name: str  # "1.1"
    has_body: bool
    scheme_from_target: bytes | None = None  # set for absolute-form targets
    upgrade: bytes | None = None  # the Upgrade header, if any (h2c)
    # ``path``, worked out on first use.
    _path: str | None = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> str:
        path = self._path
        if path is None:
            raw = self.raw_path.decode("latin-1")
            path = self._path = unquote(raw, errors="replace") if "%" in raw else raw
        return path


def find_head_end(buffer: bytes | bytearray, limits: Limits, resume: int = 0) -> int:
    """Return the index just past the head's blank line, or -1 if more bytes are needed.

    ``resume`` is the buffer length at the previous call that returned -1: the bytes before it
    were already checked, so a head trickled in byte by byte costs linear time, not quadratic.

    Raises ``RemoteProtocolError`` (414 or 431) as soon as the bytes already received prove the
    head breaks a limit, so a client cannot make us buffer more than the limits allow.
    """
    start = 0
    # RFC 9112 2.2: ignore empty lines before the request line (bounded: at most a few).
    while buffer.startswith(b"\r\n", start) and start < 8:
        start += 2
    if buffer[start : start + 1] == b"\x16":
        raise _bad(
            "a TLS handshake was sent to a plain-HTTP port; use http:// here",
            reason="tls_on_plain_port",
        )
    line_end = buffer.find(b"\r\n", start)
    line_limit = limits.max_request_line_size
    # The request line is at most line_limit bytes, so this search stays small.
    first_lf = buffer.find(b"\n", start, len(buffer) if line_end == -1 else line_end + 2)
    if first_lf != -1 and first_lf != line_end + 1:
        raise _bad("bare LF in the request line; lines must end with CRLF")
    if line_end == -1:
        if len(buffer) - start > line_limit:
            raise RemoteProtocolError(
                f"request line longer than {line_limit} bytes", 414, "request_line_too_long"
            )
        return -1
    if line_end - start > line_limit:
        raise RemoteProtocolError(
            f"request line longer than {line_limit} bytes", 414, "request_line_too_long"
        )
    if buffer.startswith(b"\r\n", line_end + 2):
        return line_end + 4
    head_end = buffer.find(b"\r\n\r\n", max(line_end, resume - 3))
    headers_limit = limits.max_request_headers_total_size
    if head_end == -1:
        # Only the bytes new since the last call need checking; start the region so that it
        # neither splits a CRLF nor begins with the LF that completes one.
        check_from = max(line_end + 2, resume - 1)
        if buffer[check_from - 1 : check_from + 1] == b"\r\n":
            check_from += 1
        region = buffer[check_from:]
        if region.count(b"\n") != region.count(b"\r\n"):
            raise _bad("bare LF in the request headers; lines must end with CRLF")
        if len(buffer) - line_end - 2 > headers_limit:
            raise RemoteProtocolError(
                f"request headers larger than {headers_limit} bytes", 431, "headers_too_large"
            )
        return -1
    if head_end + 2 - (line_end + 2) > headers_limit:
        raise RemoteProtocolError(
            f"request headers larger than {headers_limit} bytes", 431, "headers_too_large"
        )
    return head_end + 4


def _bad(
    message: str, status: int = 400, reason: str = "bad_request", detail: str = ""
) -> RemoteProtocolError:
    return RemoteProtocolError(message, status, reason, detail)


_SPECIAL_FIELDS = frozenset(
    (b"host", b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade")
)


def _checked_fields(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Header lines that failed the one-pass check: find which line is wrong, and how."""
    headers: list[tuple[bytes, bytes]] = []
    for line in lines:
        colon = line.find(b":")
        if colon <= 0:
            if line[:1] in (b" ", b"\t"):
                raise _bad("obsolete line folding (a header line starting with whitespace)")
            raise _bad("malformed header line (no field name and colon)")
        name = line[:colon]
        if _HEADER_NAME.fullmatch(name) is None:
            raise _bad("invalid header name (whitespace before the colon or a bad character)")
        value = line[colon + 1 :].strip(b" \t")
        if _BAD_VALUE_BYTE.search(value):
            raise _bad("control character in a header value")
        headers.append((name.lower(), value))
    return headers


def parse_head(head: bytes, limits: Limits) -> RequestHead:
    """Parse a complete head (as delimited by ``find_head_end``)."""
    start = 0
    while head.startswith(b"\r\n", start):
        start += 2
    body = head[start:-4]
    lines = body.split(b"\r\n")
    request_line = lines[0]
    line_breaks = len(lines) - 1
    if body.count(b"\n") != line_breaks or body.count(b"\r") != line_breaks:
        raise _bad("bare CR or LF in the request head; lines must end with CRLF")
    match = _REQUEST_LINE.fullmatch(request_line)
    if match is None:
        raise _bad("malformed request line")
    method, target, version = match.groups()
    http_version = version[5:]
    if http_version not in (b"1.1", b"1.0"):
        raise _bad(
            f"HTTP version {http_version.decode()} is not supported", 505, "version_not_supported"
        )
    if _BAD_TARGET_BYTE.search(target):
        raise _bad(
            "request target contains a byte that is not visible ASCII",
            detail=f": {target.decode('latin-1')}",
        )

    if line_breaks > limits.max_request_header_count:
        raise _bad(
            f"more than {limits.max_request_header_count} request headers",
            431,
            "too_many_headers",
        )
    fields = head[start + len(request_line) + 2 : -2]
    if _FIELDS.fullmatch(fields) is not None:
        headers = [(name.lower(), value) for name, value in _FIELD.findall(fields)]
    else:
        headers = _checked_fields(lines[1:])
    return _interpret(method, target, http_version, headers)


def parse_simple_head(buffer: bytes | bytearray, end: int, limits: Limits) -> RequestHead | None:
    """The common request in one pass: the head is ``buffer[:end + 4]`` (``end`` is where its
    blank line starts), well within the limits, with an origin-form target and header lines
    that need no closer look. None means the strict path (``find_head_end``, ``parse_head``)
    must decide; it accepts everything this accepts and gives the precise error otherwise."""
    if end >= limits.max_request_line_size or end >= limits.max_request_headers_total_size:
        return None
    match = _SIMPLE_HEAD.fullmatch(buffer, 0, end + 4)
    if match is None:
        return None
    method, target, minor, fields = match.groups()
    pairs = _FIELD.findall(fields)
    if len(pairs) > limits.max_request_header_count:
        return None
    headers = [(name.lower(), value) for name, value in pairs]
    return _interpret(method, target, b"1.1" if minor == b"1" else b"1.0", headers)


def _interpret(
    method: bytes, target: bytes, http_version: bytes, headers: list[tuple[bytes, bytes]]
) -> RequestHead:
    """The meaning of a syntactically valid head: framing, host, target form, keep-alive."""
    host: bytes | None = None
    host_count = 0
    content_length: int | None = None
    transfer_encoding: bytes | None = None
    connection_tokens: list[bytes] = []
    expect: bytes | None = None
    upgrade: bytes | None = None
    for name, value in headers:
        if name not in _SPECIAL_FIELDS:
            continue
        if name == b"host":
            host = value
            host_count += 1
        elif name == b"content-length":
            if content_length is not None:
                raise _bad("more than one Content-Length header")
            if _DIGITS.fullmatch(value) is None:
                raise _bad("Content-Length is not a plain decimal number")
            content_length = int(value)
        elif name == b"transfer-encoding":
            if transfer_encoding is not None:
                raise _bad("more than one Transfer-Encoding header")
            transfer_encoding = value.lower()
        elif name == b"connection":
            connection_tokens.extend(t.strip(b" \t").lower() for t in value.split(b","))
        elif name == b"expect":
            expect = value.lower()
        elif name == b"upgrade":
            upgrade = value

    chunked = False
    if transfer_encoding is not None:
        if http_version == b"1.0":
            raise _bad("Transfer-Encoding in an HTTP/1.0 request")
        if content_length is not None:
            raise _bad("both Content-Length and Transfer-Encoding; the framing is ambiguous")
        if transfer_encoding != b"chunked":
            codings = [c.strip(b" \t") for c in transfer_encoding.split(b",")]
            if codings[-1:] != [b"chunked"] or b"chunked" in codings[:-1]:
                raise _bad("Transfer-Encoding must end with a single 'chunked'")
            raise _bad("only the 'chunked' transfer coding is implemented", 501, "not_implemented")
        chunked = True

    if host_count > 1:
        raise _bad("more than one Host header")
    if host is None and http_version == b"1.1":
        raise _bad("missing Host header (required in HTTP/1.1)")
    if host is not None and _HOST.fullmatch(host) is None:
        raise _bad("invalid Host header")

    scheme_from_target: bytes | None = None
    if method == b"CONNECT":
        raise RemoteProtocolError(
            "CONNECT is not supported: this is an origin server, not a proxy",
            405,
            "method_not_allowed",
        )
    if target.startswith(b"/"):
        raw_path, _, query_string = target.partition(b"?")
    elif target == b"*":
        if method != b"OPTIONS":
            raise RemoteProtocolError(
                "asterisk-form target is only allowed with OPTIONS", 405, "method_not_allowed"
            )
        raw_path, query_string = b"*", b""
    else:
        absolute = _ABSOLUTE.fullmatch(target)
        if absolute is None:
            # authority-form (host:port) belongs to CONNECT, which an origin server refuses.
            raise RemoteProtocolError(
                "authority-form target on an origin server", 405, "method_not_allowed"
            )
        scheme, authority, raw_path, query = absolute.groups()
        scheme_from_target = scheme.lower()
        if scheme_from_target not in (b"http", b"https") or not authority:
            raise _bad("absolute-form target must be an http or https URI with a host")
        if host is not None and host.lower() != authority.lower():
            raise _bad("Host header does not match the authority of the absolute-form target")
        host = authority
        raw_path = raw_path or b"/"
        query_string = query or b""

    if http_version == b"1.1":
        keep_alive = b"close" not in connection_tokens
    else:
        keep_alive = b"keep-alive" in connection_tokens and b"close" not in connection_tokens
    expect_continue = False
    if expect is not None and http_version == b"1.1":
        if expect != b"100-continue":
            raise _bad("unsupported expectation in Expect header", 417, "expectation_failed")
        expect_continue = True

    return RequestHead(
        method,
        target,
        http_version,
        headers,
        raw_path,
        query_string,
        host,
        content_length,
        chunked,
        keep_alive,
        expect_continue,
        method.decode("ascii"),  # a token: ASCII by the request line's grammar
        "1.1" if http_version == b"1.1" else http_version.decode("ascii"),
        chunked or bool(content_length),
        scheme_from_target,
        upgrade,
    )
