"""The ASGI app the https tests serve (also loaded by the ``tiercel`` command in a subprocess,
so it imports nothing from the test helpers)."""

from __future__ import annotations

import json
from typing import Any


async def scope_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with a JSON summary of its scope (and the body's length)."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = json.dumps(
        {
            "http_version": scope["http_version"],
            "scheme": scope["scheme"],
            "method": scope["method"],
            "path": scope["path"],
            "query_string": scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_size": size,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
