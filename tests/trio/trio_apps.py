"""ASGI apps for the trio adapter tests: trio-native (``trio.sleep``) and anyio-based.

Also served by the real ``tiercel --adapter trio`` command (``trio_apps:app``, cwd = here).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import threading
from typing import Any
from urllib.parse import parse_qs

import anyio
import trio

MB = 1024 * 1024
CHUNK = 64 * 1024
BLOCK = random.Random(1234).randbytes(MB)


def pattern(size: int) -> bytes:
    """``size`` deterministic bytes that are not all alike."""
    full, rest = divmod(size, MB)
    return BLOCK * full + BLOCK[:rest]


class State:
    """What the app saw, shared with the test thread."""

    def __init__(self) -> None:
        self.sent = 0  # bytes /download has passed to send()
        self.finished = threading.Event()  # /download or /hash completed
        self.gate = threading.Event()  # /hash?gated=1 waits for it before reading
        self.started = threading.Event()  # /sleep or /forever began
        self.cancelled = threading.Event()  # /forever was cancelled
        self.lifespan: list[str] = []

    def reset(self) -> None:
        vars(self).update(vars(State()))


STATE = State()


async def read_body(receive: Any) -> bytes | None:
    """The whole request body; None if the client left (or the server refused the body)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def respond(send: Any, body: bytes, status: int = 200, headers: Any = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            STATE.lifespan.append("startup")
            await trio.sleep(0)  # trio-native in the lifespan task too
            scope["state"]["greeting"] = "hello from lifespan"
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            STATE.lifespan.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    client_port = b"%d" % scope["client"][1] if scope["client"] else b"0"
    if path == "/download":  # N MiB in 64 KiB pieces, chunked (no content-length)
        data = pattern(int(float(query.get("mb", "1")) * MB))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for offset in range(0, len(data), CHUNK):
            chunk = data[offset : offset + CHUNK]
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            STATE.sent += len(chunk)
        await send({"type": "http.response.body", "body": b""})
        STATE.finished.set()
    elif path == "/hash":  # sha256 and size of the body (optionally after the gate opens)
        if query.get("gated"):
            while not STATE.gate.is_set():
                await trio.sleep(0.01)
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            body = message.get("body", b"")
            digest.update(body)
            size += len(body)
            if not message.get("more_body"):
                break
        await respond(send, f"{digest.hexdigest()} {size}".encode())
        STATE.finished.set()
    elif path == "/chunks":  # a chunked response in three pieces
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in (b"first,", b"second,", b"third"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            await trio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/sleep":  # trio-native: answers after trio.sleep
        STATE.started.set()
        print("slow request started", file=sys.stderr, flush=True)  # for the command tests
        seconds = float(query.get("s", "0.2"))
        await trio.sleep(seconds)
        await respond(send, b"slept " + str(seconds).encode() + b"\n" + b"." * 10_000)
    elif path == "/anyio":  # anyio: a task group and anyio.sleep
        results: list[int] = []

        async def work(i: int) -> None:
            await anyio.sleep(0.05)
            results.append(i)

        async with anyio.create_task_group() as group:
            for i in range(5):
                group.start_soon(work, i)
        await respond(send, json.dumps(sorted(results)).encode())
    elif path == "/forever":  # never answers; records its cancellation
        STATE.started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            STATE.cancelled.set()
            raise
    elif path == "/early":  # 103 Early Hints, then the response
        await send(
            {
                "type": "http.response.informational",
                "status": 103,
                "headers": [(b"link", b"</style.css>; rel=preload")],
            }
        )
        await respond(send, b"after hints")
    elif path == "/partial":  # starts a response, then crashes: the engine aborts
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"100000")],
            }
        )
        await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
        raise RuntimeError("the app fails half way (expected by the test)")
    elif path == "/scope":
        info = {
            "http_version": scope["http_version"],
            "scheme": scope["scheme"],
            "server": scope["server"],
            "extensions": sorted(scope["extensions"]),
            "addresses": scope["extensions"].get("tiercel.server_addresses"),
            "state": scope.get("state"),
            "runtime": "trio" if trio.lowlevel.current_trio_token() else "?",
        }
        await respond(send, json.dumps(info).encode(), headers=[(b"x-client-port", client_port)])
    else:  # echo: method, path, query, body length, then the body
        body = await read_body(receive)
        if body is None:
            return
        summary = f"{scope['method']} {path} {scope['query_string'].decode()} {len(body)}\n"
        await respond(send, summary.encode() + body, headers=[(b"x-client-port", client_port)])


async def failing_startup(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database (expected)"})
        return
    await respond(send, b"never")


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
    """WSGI: ``/hash`` digests the body as it streams in, ``/download?mb=N`` streams N MiB
    from a generator, ``/block`` waits (in its worker thread) until the test opens the gate;
    anything else echoes."""
    path = environ["PATH_INFO"]
    query = parse_qs(environ["QUERY_STRING"])
    if path == "/hash":
        digest, size = hashlib.sha256(), 0
        while block := environ["wsgi.input"].read(CHUNK):
            digest.update(block)
            size += len(block)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{digest.hexdigest()} {size}".encode()]
    if path == "/download":
        data = pattern(int(float(query.get("mb", ["1"])[0]) * MB))

        def pieces() -> Any:
            for offset in range(0, len(data), CHUNK):
                yield data[offset : offset + CHUNK]
                STATE.sent += CHUNK

        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return pieces()
    if path == "/block":
        STATE.started.set()
        STATE.gate.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"unblocked"]
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    thread = threading.current_thread().name
    return [f"{environ['REQUEST_METHOD']} {path} {len(body)} {thread}\n".encode(), body]
