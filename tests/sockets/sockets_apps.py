"""Apps the socket tests serve with the real ``tiercel`` command (cwd = this folder).

Both answer ``<interface> <path> listen_fds=<LISTEN_FDS or ->``, so a test sees which app
answered and that systemd's variables were taken out of the environment before the app ran.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any


def _summary(interface: str, path: str) -> bytes:
    return f"{interface} {path} listen_fds={os.environ.get('LISTEN_FDS', '-')}".encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = _summary("asgi", scope["path"])
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = _summary("wsgi", environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
