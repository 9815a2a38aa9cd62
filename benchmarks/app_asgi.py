"""Raw ASGI benchmark app, no framework.

- ``GET /``     -> 13 bytes ``Hello, world!`` as ``text/plain`` with content-length.
- ``GET /json`` -> ``json.dumps({"message": "Hello, World!"})`` as ``application/json``,
  serialised on every request.
- ``GET /download`` -> 1 MiB of ``x`` in one body message, with content-length.
- ``POST /upload`` -> reads the whole request body and answers with its length.
- anything else -> 404.

Lifespan is handled minimally: startup and shutdown are acknowledged, nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PLAIN_BODY = b"Hello, world!"
PLAIN_HEADERS = [
    (b"content-type", b"text/plain"),
    (b"content-length", str(len(PLAIN_BODY)).encode("ascii")),
]
DOWNLOAD_BODY = b"x" * (1 << 20)
DOWNLOAD_HEADERS = [
    (b"content-type", b"application/octet-stream"),
    (b"content-length", str(len(DOWNLOAD_BODY)).encode("ascii")),
]
NOT_FOUND_BODY = b"Not Found"
NOT_FOUND_HEADERS = [
    (b"content-type", b"text/plain"),
    (b"content-length", str(len(NOT_FOUND_BODY)).encode("ascii")),
]


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/":
        await _respond(send, 200, PLAIN_HEADERS, PLAIN_BODY)
    elif path == "/json":
        body = json.dumps({"message": "Hello, World!"}).encode("utf-8")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
        ]
        await _respond(send, 200, headers, body)
    elif path == "/download":
        await _respond(send, 200, DOWNLOAD_HEADERS, DOWNLOAD_BODY)
    elif path == "/upload":
        received = 0
        while True:
            message = await receive()
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = str(received).encode("ascii")
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await _respond(send, 200, headers, body)
    else:
        await _respond(send, 404, NOT_FOUND_HEADERS, NOT_FOUND_BODY)
