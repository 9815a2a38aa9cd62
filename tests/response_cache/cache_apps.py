"""Apps that count their calls and answer with the caching headers a test path asks for.

``/public/...``: ``Cache-Control: public, max-age=60`` (``?max-age=N`` changes it). Other
first path segments select one rule each (see ``HEADERS``). ``?size=N`` pads the body to N
bytes. The body always names the path and the call number, so a cached answer is recognisable.
"""

from __future__ import annotations

import threading
from collections import Counter
from email.utils import formatdate
from time import time
from typing import Any
from urllib.parse import parse_qs

Headers = list[tuple[bytes, bytes]]

HEADERS: dict[str, Headers] = {
    "public": [],  # filled in per request from ?max-age=
    "smaxage": [(b"cache-control", b"public, s-maxage=60")],
    "expires": [],  # filled in per request: an Expires date 60 s ahead
    "cookie": [(b"cache-control", b"public, max-age=60"), (b"set-cookie", b"a=1")],
    "vary": [(b"cache-control", b"public, max-age=60"), (b"vary", b"accept-encoding")],
    "pragma": [(b"cache-control", b"public, max-age=60"), (b"pragma", b"no-cache")],
    "private": [(b"cache-control", b"private, max-age=60")],
    "notpublic": [(b"cache-control", b"max-age=60")],
    "nostore": [(b"cache-control", b"public, max-age=60, no-store")],
    "plain": [],
    "missing": [(b"cache-control", b"public, max-age=60")],  # answered 404
}


class CallCounter:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, path: str) -> int:
        with self._lock:
            self.calls[path] += 1
            return self.calls[path]

    def total(self) -> int:
        return sum(self.calls.values())


def answer(counter: CallCounter, method: str, path: str, query: str) -> tuple[int, Headers, bytes]:
    number = counter.count(path)
    params = parse_qs(query)
    kind = path.strip("/").split("/", 1)[0]
    headers = list(HEADERS.get(kind, []))
    if kind == "public":
        max_age = params.get("max-age", ["60"])[0]
        headers.append((b"cache-control", f"public, max-age={max_age}".encode()))
    elif kind == "expires":
        headers.append((b"expires", formatdate(time() + 60, usegmt=True).encode()))
    body = f"{method} {path}?{query} call {number}\n".encode()
    size = int(params.get("size", ["0"])[0])
    if size > len(body):
        body += b"x" * (size - len(body))
    headers.append((b"content-type", b"text/plain"))
    status = 404 if kind == "missing" else 200
    return status, headers, body


def asgi_app(counter: CallCounter) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        status, headers, body = answer(
            counter, scope["method"], scope["path"], scope["query_string"].decode()
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        # In two pieces: the cache must put a streamed response together.
        half = len(body) // 2
        await send({"type": "http.response.body", "body": body[:half], "more_body": True})
        await send({"type": "http.response.body", "body": body[half:]})

    return app


def wsgi_app(counter: CallCounter) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        status, headers, body = answer(
            counter, environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["QUERY_STRING"]
        )
        start_response(
            f"{status} {'OK' if status == 200 else 'Not Found'}",
            [(name.decode(), value.decode()) for name, value in headers],
        )
        half = len(body) // 2
        return [body[:half], body[half:]]

    return app
