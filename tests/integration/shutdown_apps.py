"""Apps the shutdown tests serve with the real ``tiercel`` command (cwd = this folder)."""

from __future__ import annotations

import asyncio
import sys


async def slow(scope, receive, send):
    """``GET /slow?s=SECONDS`` answers after sleeping (default 1 s); anything else at once."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        seconds = float(scope["query_string"].decode().partition("=")[2] or 1)
        print(f"slow request started ({seconds:g} s)", file=sys.stderr, flush=True)
        await asyncio.sleep(seconds)
    body = b"done " + scope["path"].encode() + b"\n" + b"." * 10_000
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})
