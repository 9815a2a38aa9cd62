"""The app behind the proxies: it answers with what it saw, as JSON."""

from __future__ import annotations

import hashlib
import json
from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    seen = {
        "client": scope["client"],
        "server": scope["server"],
        "scheme": scope["scheme"],
        "http_version": scope["http_version"],
        "method": scope["method"],
        "path": scope["path"],
        "root_path": scope["root_path"],
        "host": headers.get("host"),
        "headers": headers,
        "body_length": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(seen).encode()})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """For the threads adapter, which runs WSGI apps only."""
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"ok"]
