"""A module-level ASGI app for the command-line test: cacheable, and says how often it ran."""

from __future__ import annotations

import itertools
from typing import Any

_calls = itertools.count(1)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = f"call {next(_calls)}\n".encode()
    headers = [(b"cache-control", b"public, max-age=60"), (b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
