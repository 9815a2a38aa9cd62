"""Response header checks shared by every protocol.

An app's header goes on the wire only if it cannot change the framing of the message: names are
tokens, values have no CR, LF or NUL (the root of response splitting, CVE-2020-7695).
"""

from __future__ import annotations

import re

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
