"""Response header checks shared by every protocol.

An app's header goes on the wire only if it cannot change the framing of the message: names are
tokens, values have no CR, LF or NUL (the root of response splitting, CVE-2020-7695).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .caches import BoundedCache
from .errors import LocalProtocolError

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|^[ \t]|[ \t]$")

Headers = list[tuple[bytes, bytes]]


def escape_for_log(value: bytes | str, limit: int = 2000) -> str:
    """Printable ASCII only: anything else becomes \\xNN, so logs cannot be forged or colored."""
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    raw = raw[:limit]
    out = []
    for byte in raw:
        if 0x20 <= byte < 0x7F and byte not in (0x22, 0x5C):
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def validate_response_headers(headers: Headers) -> None:
    for name, value in headers:
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise LocalProtocolError(
                f"response header names and values must be bytes (got {name!r}: {value!r})"
            )
        if _TOKEN.fullmatch(name) is None:
            raise LocalProtocolError(
                f"invalid response header name {escape_for_log(name)!r}: only token characters "
                "are allowed (no spaces, colons, CR, LF or NUL)"
            )
        if _BAD_VALUE.search(value):
            raise LocalProtocolError(
                f"invalid value for response header {escape_for_log(name)!r}: "
                f"{escape_for_log(value)!r} contains CR, LF, NUL or another control character, "
                "or starts or ends with whitespace; it was not sent"
            )


@dataclass(frozen=True, slots=True)
class HeaderFacts:
    """What the engine needs to know about a valid response header list, found in one pass:
    the serialised lines, the headers it would otherwise add, and the app's framing."""

    headers: tuple[tuple[bytes, bytes], ...]
    lines: bytes  # b"name: value\r\n" for each header, in order, as the app wrote them
    has_date: bool
    has_server: bool
    has_connection: bool
    connection_close: bool  # a Connection header lists "close"
    content_length: int | None  # the last Content-Length, if the app gave one
    chunked: bool  # the app gave Transfer-Encoding: chunked
    # Set when the app's framing headers cannot be honoured on HTTP/1.1 (a Content-Length that
    # is not a number, a transfer coding other than chunked); raised by the HTTP/1.1 codec.
    framing_error: str | None


# Apps send the same few header lists again and again, so the checks and the serialisation are
# done once per distinct list.
_FACTS_CACHE: BoundedCache[tuple[Any, ...], HeaderFacts] = BoundedCache()


def cached_header_facts(headers: Any) -> HeaderFacts | None:
    """The facts for a header list seen before, without checking anything; else None."""
    try:
        return _FACTS_CACHE.get(tuple(headers))
    except TypeError:  # not iterable, or items that are not hashable (lists): not cached
        return None


def header_facts(headers: Headers) -> HeaderFacts:
    """Validate response headers (``validate_response_headers``) and describe them."""
    try:
        key = tuple(headers)
        facts = _FACTS_CACHE.get(key)
    except TypeError:
        key, facts = None, None
    if facts is not None:
        return facts
    validate_response_headers(headers)
    lines: list[bytes] = []
    has_date = has_server = has_connection = close = chunked = False
    length: int | None = None
    framing_error: str | None = None
    for name, value in headers:
        lines += [name, b": ", value, b"\r\n"]
        lowered = name.lower()
        if lowered == b"date":
            has_date = True
        elif lowered == b"server":
            has_server = True
        elif lowered == b"content-length":
            if value.isdigit():
                length = int(value)
            else:
                framing_error = f"bad Content-Length {value!r} in the response"
        elif lowered == b"transfer-encoding":
            if value.lower() == b"chunked":
                chunked = True
            else:
                framing_error = "the only transfer coding tiercel can send is chunked"
        elif lowered == b"connection":
            has_connection = True
            close = close or b"close" in value.lower()
    facts = HeaderFacts(
        headers=tuple((name, value) for name, value in headers),
        lines=b"".join(lines),
        has_date=has_date,
        has_server=has_server,
        has_connection=has_connection,
        connection_close=close,
        content_length=length,
        chunked=chunked,
        framing_error=framing_error,
    )
    if key is not None and all(type(item) is tuple for item in key):
        _FACTS_CACHE.remember(key, facts)
    return facts
