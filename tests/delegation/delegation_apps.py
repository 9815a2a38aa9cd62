"""Apps the delegation tests serve: each answers with what it saw, as JSON, and its pid, so a
test can tell which process served a request and that path, Host, client and body arrived."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from typing import Any


def _answer(role: str, method: str, path: str, *, host: str, client: Any, body: bytes) -> bytes:
    return json.dumps(
        {
            "role": role,
            "pid": os.getpid(),
            "method": method,
            "path": path,
            "host": host,
            "client": list(client) if client else None,
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
    ).encode()


def _asgi(role: str) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        data = _answer(
            role, scope["method"], scope["path"], host=host, client=scope["client"], body=body
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})

    return app


def _wsgi(role: str) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        client = (environ.get("REMOTE_ADDR"), int(environ.get("REMOTE_PORT") or 0))
        data = _answer(
            role,
            environ["REQUEST_METHOD"],
            environ["PATH_INFO"],
            host=environ.get("HTTP_HOST", ""),
            client=client,
            body=body,
        )
        start_response("200 OK", [("Content-Type", "application/json")])
        return [data]

    return app


front_asgi = _asgi("front")
receiver_asgi = _asgi("receiver")
front_wsgi = _wsgi("front")
receiver_wsgi = _wsgi("receiver")
