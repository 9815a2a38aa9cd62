"""An app for tests/workers/test_reuse_port.py: like a CPU-bound app, it blocks its worker's
event loop for a moment on every request, so new connections wait in the kernel's accept queue
(where a stopping worker's SO_REUSEPORT socket would reset them)."""

from __future__ import annotations

import os
import time


async def busy(scope, receive, send):
    """Answers the worker's process id after blocking the event loop for 5 ms."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    time.sleep(0.005)  # deliberately blocking: the accept queue fills meanwhile
    body = str(os.getpid()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})
