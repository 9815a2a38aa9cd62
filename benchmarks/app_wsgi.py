"""Raw WSGI benchmark app, the same answers as app_asgi.py: ``/`` is 13 bytes of text,
``/json`` a small JSON document, anything else 404."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

PLAIN_BODY = b"Hello, world!"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        body, content_type, status = PLAIN_BODY, "text/plain", "200 OK"
    elif path == "/json":
        body = json.dumps({"message": "Hello, World!"}).encode()
        content_type, status = "application/json", "200 OK"
    else:
        body, content_type, status = b"Not Found", "text/plain", "404 Not Found"
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
