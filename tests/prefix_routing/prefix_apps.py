"""Apps the prefix-routing tests mount side by side in one ``tiercel --apps`` process.

Each ASGI app answers with JSON naming itself and what it was given (root_path, path, the state
its lifespan startup put in). Lifespan events are appended to the file named by
``PREFIX_TEST_LOG``, so a test can check every app was started and stopped, and in what order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any


def _log(line: str) -> None:
    path = os.environ.get("PREFIX_TEST_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as file:
            file.write(line + "\n")


def make_app(name: str, fail_startup: bool = False) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if fail_startup:
                        _log(f"{name} startup failed")
                        await send({"type": "lifespan.startup.failed", "message": "no database"})
                        return
                    scope["state"]["started_by"] = name
                    _log(f"{name} startup")
                    await send({"type": "lifespan.startup.complete"})
                else:
                    _log(f"{name} shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = {
            "app": name,
            "root_path": scope["root_path"],
            "path": scope["path"],
            "state": scope.get("state"),
            "received": len(body),
            "pid": os.getpid(),
        }
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

    return app


api = make_app("api")
site = make_app("site")
admin = make_app("admin")
broken = make_app("broken", fail_startup=True)


def legacy(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A WSGI app: reports SCRIPT_NAME/PATH_INFO and counts the body it reads in blocks."""
    received = 0
    while block := environ["wsgi.input"].read(65536):
        received += len(block)
    answer = {
        "app": "legacy",
        "script_name": environ["SCRIPT_NAME"],
        "path_info": environ["PATH_INFO"],
        "received": received,
        "host": environ.get("HTTP_HOST"),
    }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(answer).encode()]


def legacy_stream(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A WSGI app that streams a response in many blocks."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    count = int(environ.get("QUERY_STRING") or "10")
    return (b"x" * 65536 for _ in range(count))
