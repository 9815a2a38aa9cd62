"""Reason phrases and prebuilt status lines.

Every status line carries a reason phrase: some clients (h2load --h1) count a response without
one as failed.
"""

from __future__ import annotations

from http import HTTPStatus

REASON_PHRASES: dict[int, bytes] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}
# RFC 9110's names where Python's table still has RFC 7231's.
REASON_PHRASES.update(
    {
        413: b"Content Too Large",
        414: b"URI Too Long",
        416: b"Range Not Satisfiable",
        421: b"Misdirected Request",
        422: b"Unprocessable Content",
        425: b"Too Early",
    }
)


def reason_phrase(status: int) -> bytes:
    """The standard phrase, or a class-generic one for codes the RFCs do not name."""
    phrase = REASON_PHRASES.get(status)
    if phrase is not None:
        return phrase
    return {1: b"Informational", 2: b"Success", 3: b"Redirection", 4: b"Client Error"}.get(
        status // 100, b"Server Error"
    )


STATUS_LINES_11: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, reason_phrase(code)) for code in range(100, 600)
}
