"""The app ``tiercel`` serves when it is given none: a page saying the server works."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from tiercel.core.asgi import ADDRESSES_EXTENSION

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tiercel is running</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem}}
code{{background:#f3f3f3;padding:.1rem .3rem}}</style></head>
<body><h1>tiercel is running</h1>
<p>This is the built-in welcome app. Serve your own ASGI app with
<code>tiercel yourmodule:app</code>.</p>
<p>Listening on: {addresses}</p>
<p>This request: <code>{method} {path}</code> over HTTP/{version}.</p>
</body></html>
"""


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    addresses = scope.get("extensions", {}).get(ADDRESSES_EXTENSION, {}).get("addresses", [])
    if scope["path"] == "/json":
        body = json.dumps({"message": "Hello, World!"}).encode()
        content_type = b"application/json"
    else:
        body = PAGE.format(
            addresses=", ".join(escape(a) for a in addresses) or "?",
            method=escape(scope["method"]),
            path=escape(scope["path"]),
            version=scope["http_version"],
        ).encode()
        content_type = b"text/html; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", content_type)],
        }
    )
    await send({"type": "http.response.body", "body": body})
