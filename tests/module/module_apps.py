"""ASGI apps that `tiercel module` tests run in real app processes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from typing import Any
from urllib.parse import parse_qs

CHUNK = b"x" * 1_048_576


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    query = parse_qs(scope["query_string"].decode())
    route = scope["path"][len(scope["root_path"]) :]
    if route == "/stream":
        size = int(query["size"][0])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(size).encode())],
            }
        )
        while size > 0:
            piece = CHUNK if size >= len(CHUNK) else CHUNK[:size]
            size -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": size > 0})
        if "marker" in query:  # lets a test see when the app finished sending
            with open(query["marker"][0], "w") as marker:
                marker.write("done")
        return
    if route == "/sleep":
        await asyncio.sleep(float(query["seconds"][0]))
    digest = hashlib.sha256()
    length = 0
    while True:
        message = await receive()
        data = message.get("body", b"")
        digest.update(data)
        length += len(data)
        if not message.get("more_body"):
            break
    body = json.dumps(
        {
            "pid": os.getpid(),
            "port": os.environ.get("TIERCEL_PORT"),
            "client": scope["client"][0] if scope["client"] else None,
            "scheme": scope["scheme"],
            "root_path": scope["root_path"],
            "path": scope["path"],
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            "body_length": length,
            "body_sha256": digest.hexdigest(),
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
