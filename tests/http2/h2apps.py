"""The HTTP/2 attack tests' ASGI app: a few routes, and what it saw (``AppState``).

A module of its own, not conftest.py: test modules import from it, and ``conftest`` is a name
every test directory has."""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

SLOW_BODY = b"slow response body\n" * 1000  # 19,000 bytes, more than one DATA frame


class AppState:
    """What the app saw, shared between the server thread and the test."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.release = threading.Event()  # /block waits for this
        self.sent: collections.Counter[str] = collections.Counter()  # body bytes the app sent
        self.times: dict[str, float] = {}

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def make_app(state: AppState) -> Callable[..., Any]:
    async def read_all(receive: Any, delay: float = 0.0) -> int:
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return -1
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                return size
            if delay:
                await asyncio.sleep(delay)

    async def respond(send: Any, body: bytes, status: int = 200) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        path = scope["path"]
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        state.calls[path] += 1
        loop = asyncio.get_running_loop()
        if path == "/slow":  # answers after 0.3 s
            await asyncio.sleep(0.3)
            await respond(send, SLOW_BODY)
        elif path == "/block":  # answers once the test sets state.release (at most 10 s)
            for _ in range(500):
                if state.release.is_set():
                    break
                await asyncio.sleep(0.02)
            await respond(send, b"released")
        elif path == "/sleep":
            await asyncio.sleep(float(query.get("s", "1")))
            await respond(send, b"slept")
        elif path == "/big":  # n bytes in chunks of c, with d seconds between chunks
            size = int(query.get("n", "100000"))
            chunk = int(query.get("c", str(size)))
            delay = float(query.get("d", "0"))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            key = query.get("key", path)
            left = size
            try:
                while left > 0:
                    piece = min(chunk, left)
                    left -= piece
                    await send(
                        {"type": "http.response.body", "body": b"x" * piece, "more_body": True}
                    )
                    state.sent[key] += piece
                    if delay:
                        await asyncio.sleep(delay)
                await send({"type": "http.response.body", "body": b""})
            finally:
                state.times[key + ":done"] = loop.time()
        elif path == "/upload":  # reads the body (slowly, after a pause), answers its length
            key = query.get("key", path)
            await asyncio.sleep(float(query.get("wait", "0")))
            state.times[key + ":reading"] = loop.time()
            size = await read_all(receive, float(query.get("d", "0")))
            await respond(send, str(size).encode())
        else:
            size = await read_all(receive)
            await respond(send, f"ok {path} {size}".encode())

    return app
