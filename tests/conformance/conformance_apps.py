"""One conformance app per interface (ASGI, WSGI, feature contract) that behave the same.

- ``/echo``: ``"{method} {path} {body length}\\n"`` followed by the body.
- ``/stream?n=K``: K chunks of 64 KiB, no Content-Length (chunked on HTTP/1.1).
- ``/big?mb=N``: N MiB of ``pattern`` bytes, with a Content-Length, written in 64 KiB pieces.
- ``/slow?s=X``: sleeps X seconds, then answers ``done``.
- ``/upload``: reads the body in pieces; answers ``"{length} {sha256}"``.
- ``/forever?s=X``: streams 64 KiB chunks for X seconds (default 5): "forever", for a client
  that leaves. Not in the feature app (it cannot stream: it writes before it returns).

Every app records in a ``Progress`` what it did, so tests can look at the server from the app's
side: how many response bytes the app has handed over (back-pressure), which requests started
and finished, and whether it saw the client leave.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

from tiercel.core.features import (
    FeatureCollection,
    RequestFeature,
    ResponseBodyFeature,
    ResponseFeature,
)

CHUNK = 64 * 1024
MB = 1024 * 1024
_BLOCK = bytes((i * 7 + i // 256) % 251 for i in range(MB))  # not periodic at 256 or 64 KiB


def pattern(size: int) -> bytes:
    """``size`` deterministic bytes that are not all alike."""
    full, rest = divmod(size, MB)
    return _BLOCK * full + _BLOCK[:rest]


def pattern_chunks(size: int) -> Iterator[bytes]:
    """``pattern(size)`` in 64 KiB pieces (CHUNK divides MB: no piece crosses a block)."""
    for offset in range(0, size, CHUNK):
        start = offset % MB
        yield _BLOCK[start : start + min(CHUNK, size - offset)]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Progress:
    """What the app saw, shared between the server's threads and the test's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.big_sent = 0  # response bytes /big handed to the server so far
        self.forever_chunks = 0  # chunks /forever handed to the server so far
        self.started: list[str] = []  # paths whose handler began
        self.finished: list[str] = []  # paths whose handler returned normally
        self.ended: list[str] = []  # paths whose handler is over, however it ended
        self.slow_started = threading.Event()
        self.disconnects = 0  # times the app noticed the client had left
        self.lifespan: list[str] = []  # "startup", "shutdown" as the ASGI app saw them

    def add_forever(self) -> None:
        with self.lock:
            self.forever_chunks += 1

    def add_sent(self, count: int) -> None:
        with self.lock:
            self.big_sent += count

    def mark(self, where: list[str], path: str) -> None:
        with self.lock:
            where.append(path)

    def running(self) -> list[str]:
        """Paths whose handler started and has not ended yet."""
        with self.lock:
            left = list(self.started)
            for path in self.ended:
                left.remove(path)
            return left

    def wait_all_ended(self, timeout: float = 5.0) -> list[str]:
        """Waits until no handler runs; returns the ones still running after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := self.running()) and time.monotonic() < deadline:
            time.sleep(0.02)
        return left


def _query(raw: bytes | str) -> dict[str, str]:
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    return {k: v[0] for k, v in parse_qs(text).items()}


def _stream_count(query: dict[str, str]) -> int:
    return int(query.get("n", "4"))


def _big_size(query: dict[str, str]) -> int:
    return int(float(query.get("mb", "1")) * MB)


# -- ASGI ------------------------------------------------------------------------------------


def make_asgi_app(
    progress: Progress, sleep: Callable[[float], Awaitable[Any]]
) -> Callable[..., Awaitable[None]]:
    """The ASGI app; ``sleep`` is the runtime's (``asyncio.sleep`` or ``trio.sleep``)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                progress.lifespan.append(message["type"].split(".")[-1])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        progress.mark(progress.started, scope["path"])
        try:
            await handle(scope, receive, send)
        finally:
            progress.mark(progress.ended, scope["path"])

    async def handle(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        query = _query(scope["query_string"])

        async def start(headers: list[tuple[bytes, bytes]] | None = None) -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"), *(headers or [])],
                }
            )

        if path == "/upload":
            digest, length = hashlib.sha256(), 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    progress.disconnects += 1
                    return
                body = message.get("body", b"")
                digest.update(body)
                length += len(body)
                if not message.get("more_body"):
                    break
            await start()
            answer = f"{length} {digest.hexdigest()}".encode()
            await send({"type": "http.response.body", "body": answer})
        elif path == "/stream":
            await start()
            for index in range(_stream_count(query)):
                piece = bytes([65 + index % 26]) * CHUNK
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/forever":
            await start()
            until = time.monotonic() + float(query.get("s", "5"))
            while time.monotonic() < until:
                await send({"type": "http.response.body", "body": b"f" * CHUNK, "more_body": True})
                progress.add_forever()
            await send({"type": "http.response.body", "body": b""})
        elif path == "/big":
            size = _big_size(query)
            await start([(b"content-length", str(size).encode())])
            for piece in pattern_chunks(size):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                progress.add_sent(len(piece))
            await send({"type": "http.response.body", "body": b""})
        elif path == "/slow":
            progress.slow_started.set()
            await sleep(float(query.get("s", "1")))
            await start()
            await send({"type": "http.response.body", "body": b"done"})
        else:  # /echo and anything else
            chunks = []
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    progress.disconnects += 1
                    return
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            body = b"".join(chunks)
            await start()
            head = f"{scope['method']} {path} {len(body)}\n".encode()
            await send({"type": "http.response.body", "body": head + body})
        progress.mark(progress.finished, path)

    return app


# -- WSGI ------------------------------------------------------------------------------------


class Ended:
    """A WSGI body that calls ``on_close`` once the server closes it (PEP 3333: always)."""

    def __init__(self, body: Any, on_close: Callable[[], None]) -> None:
        self.body, self.on_close = body, on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            if hasattr(self.body, "close"):
                self.body.close()
        finally:
            self.on_close()


def make_wsgi_app(progress: Progress) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ["PATH_INFO"]
        progress.mark(progress.started, path)
        try:
            result = handle(environ, start_response)
        except BaseException:
            progress.mark(progress.ended, path)
            raise
        return Ended(result, lambda: progress.mark(progress.ended, path))

    def handle(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ["PATH_INFO"]
        query = _query(environ.get("QUERY_STRING", ""))
        stream = environ["wsgi.input"]
        octets = [("Content-Type", "application/octet-stream")]

        if path == "/upload":
            digest, length = hashlib.sha256(), 0
            try:
                while piece := stream.read(CHUNK):
                    digest.update(piece)
                    length += len(piece)
            except OSError:  # the client left (ClientDisconnected is an OSError)
                progress.disconnects += 1
                raise
            start_response("200 OK", octets)
            progress.mark(progress.finished, path)
            return [f"{length} {digest.hexdigest()}".encode()]
        if path == "/stream":
            start_response("200 OK", octets)

            def stream_body() -> Iterator[bytes]:
                for index in range(_stream_count(query)):
                    yield bytes([65 + index % 26]) * CHUNK
                progress.mark(progress.finished, path)

            return stream_body()
        if path == "/forever":
            start_response("200 OK", octets)

            def forever_body() -> Iterator[bytes]:
                until = time.monotonic() + float(query.get("s", "5"))
                while time.monotonic() < until:
                    progress.add_forever()
                    yield b"f" * CHUNK

            return forever_body()
        if path == "/big":
            size = _big_size(query)
            start_response("200 OK", [*octets, ("Content-Length", str(size))])

            def big_body() -> Iterator[bytes]:
                for piece in pattern_chunks(size):
                    progress.add_sent(len(piece))
                    yield piece
                progress.mark(progress.finished, path)

            return big_body()
        if path == "/slow":
            progress.slow_started.set()
            time.sleep(float(query.get("s", "1")))
            start_response("200 OK", octets)
            progress.mark(progress.finished, path)
            return [b"done"]
        body = stream.read()
        start_response("200 OK", octets)
        progress.mark(progress.finished, path)
        return [f"{environ['REQUEST_METHOD']} {path} {len(body)}\n".encode() + body]

    return app


# -- the feature contract (the selectors example) ----------------------------------------------


def make_feature_app(progress: Progress) -> Callable[[FeatureCollection], None]:
    """Feature apps are synchronous and write the whole response before they return, and the
    host (``FeatureAppHost``) hands them the whole request body at once."""

    def app(features: FeatureCollection) -> None:
        request = features[RequestFeature]
        response = features[ResponseFeature]
        body_feature = features[ResponseBodyFeature]
        path = request.path
        query = _query(request.query_string)
        progress.mark(progress.started, path)
        try:
            handle(request, response, body_feature, path, query)
        finally:
            progress.mark(progress.ended, path)

    def handle(
        request: Any, response: Any, body_feature: Any, path: str, query: dict[str, str]
    ) -> None:
        response.response_headers = [(b"content-type", b"application/octet-stream")]
        if path == "/upload":
            digest, length = hashlib.sha256(), 0
            while piece := request.read_body():
                digest.update(piece)
                length += len(piece)
            body_feature.complete(f"{length} {digest.hexdigest()}".encode())
        elif path == "/stream":
            for index in range(_stream_count(query)):
                body_feature.write(bytes([65 + index % 26]) * CHUNK)
            body_feature.complete()
        elif path == "/big":
            size = _big_size(query)
            response.response_headers.append((b"content-length", str(size).encode()))
            for piece in pattern_chunks(size):
                body_feature.write(piece)
                progress.add_sent(len(piece))
            body_feature.complete()
        elif path == "/slow":
            progress.slow_started.set()
            time.sleep(float(query.get("s", "1")))  # blocks the whole selectors loop
            body_feature.complete(b"done")
        else:
            body = request.read_body()
            head = f"{request.method} {path} {len(body)}\n".encode()
            body_feature.complete(head + body)
        progress.mark(progress.finished, path)

    return app
