"""Apps the worker tests serve with the real ``tiercel`` command (cwd = this folder)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from urllib.parse import parse_qs


async def app(scope, receive, send):
    """``/pid`` answers this worker's process id; ``/slow?seconds=S`` does so after S seconds."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/slow":
        query = parse_qs(scope["query_string"].decode())
        await asyncio.sleep(float(query.get("seconds", ["1"])[0]))
    body = str(os.getpid()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


def wsgi_app(environ, start_response):
    """The same for WSGI (the threads adapter)."""
    if environ["PATH_INFO"] == "/slow":
        query = parse_qs(environ["QUERY_STRING"])
        time.sleep(float(query.get("seconds", ["1"])[0]))
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def slow_logged(scope, receive, send):
    """``app``, and a line on stderr when a /slow request starts (a test waits for it)."""
    if scope["type"] == "http" and scope["path"] == "/slow":
        print(f"slow request started in {os.getpid()}", file=sys.stderr, flush=True)
    await app(scope, receive, send)


if os.environ.get("WORKERS_TEST_BREAK_FILE") and os.path.exists(
    os.environ["WORKERS_TEST_BREAK_FILE"]
):
    raise RuntimeError("broken by the test (the break file exists)")


async def stuck_at_shutdown(scope, receive, send):
    """``app`` whose lifespan shutdown never ends: only SIGKILL stops its worker."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                print(f"stuck at shutdown in {os.getpid()}", file=sys.stderr, flush=True)
                await asyncio.sleep(3600)
    await app(scope, receive, send)
