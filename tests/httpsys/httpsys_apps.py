"""ASGI apps the HTTP.sys tests serve from the Windows interpreter under Wine.

Loaded there as ``httpsys_apps:NAME`` (.ci/wine-stage puts tests/httpsys on its path), so they
use nothing but the standard library.
"""

from __future__ import annotations

import json
from typing import Any


async def _body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with a JSON description of the request it got."""
    if scope["type"] != "http":
        return
    body = await _body(receive)
    report = {
        "method": scope["method"],
        "path": scope["path"],
        "root_path": scope["root_path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"),
        "http_version": scope["http_version"],
        "scheme": scope["scheme"],
        "client": list(scope["client"]) if scope["client"] else None,
        "server": list(scope["server"]) if scope["server"] else None,
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body_length": len(body),
        "body_head": body[:64].decode("latin-1"),
        "authentication": scope["extensions"].get("tiercel.authentication"),
        "addresses": scope["extensions"].get("tiercel.server_addresses"),
    }
    payload = json.dumps(report).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"x-app", b"echo")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def parts(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Streams its body in pieces (more_body), with cookies and a custom status."""
    if scope["type"] != "http":
        return
    await _body(receive)
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"set-cookie", b"a=1"),
                (b"set-cookie", b"b=2"),
                (b"x-multi", b"one"),
            ],
        }
    )
    for index in range(5):
        await send({"type": "http.response.body", "body": b"part%d\n" % index, "more_body": True})
    await send({"type": "http.response.body", "body": b"end\n"})


async def big(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A 3 MiB body of a known pattern in one message."""
    if scope["type"] != "http":
        return
    await _body(receive)
    body = bytes(range(256)) * (3 * 4096)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Raises before answering: the server must answer 500."""
    if scope["type"] != "http":
        return
    raise RuntimeError("broken on purpose")


async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers after half a second: a request in flight during a graceful stop."""
    import asyncio

    if scope["type"] != "http":
        return
    await asyncio.sleep(0.5)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"finished\n"})


async def pathsend(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Sends this very file with the http.response.pathsend extension."""
    if scope["type"] != "http":
        return
    assert "http.response.pathsend" in scope["extensions"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.pathsend", "path": __file__})


_cacheable_calls = 0


async def cacheable(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A response the kernel cache may keep; its body counts how often the app was called."""
    global _cacheable_calls
    if scope["type"] != "http":
        return
    await _body(receive)
    _cacheable_calls += 1
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"cache-control", b"public, max-age=60"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"call %d" % _cacheable_calls})
