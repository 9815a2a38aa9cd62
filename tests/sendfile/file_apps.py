"""Apps that answer with a file: ASGI pathsend / zerocopysend, WSGI wsgi.file_wrapper.

Query parameters: ``path`` (the file), ``offset``/``count`` (zerocopysend range), ``tail``
(zerocopysend with more_body, then these bytes in an ordinary body message).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs


def _params(query: bytes | str) -> dict[str, str]:
    text = query.decode() if isinstance(query, bytes) else query
    return {key: values[0] for key, values in parse_qs(text).items()}


async def asgi_file_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    params = _params(scope["query_string"])
    extensions = scope["extensions"]
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/octet-stream")],
    }
    if scope["path"] == "/pathsend":
        assert "http.response.pathsend" in extensions
        await send(start)
        await send({"type": "http.response.pathsend", "path": params["path"]})
        return
    assert "http.response.zerocopysend" in extensions
    with open(params["path"], "rb") as file:
        message: dict[str, Any] = {"type": "http.response.zerocopysend", "file": file}
        if "offset" in params:
            message["offset"] = int(params["offset"])
        if "count" in params:
            message["count"] = int(params["count"])
        tail = params.get("tail")
        if tail is not None:
            message["more_body"] = True
        await send(start)
        await send(message)
        if tail is not None:
            await send({"type": "http.response.body", "body": tail.encode()})


def wsgi_file_app(environ: dict[str, Any], start_response: Any) -> Any:
    params = _params(environ["QUERY_STRING"])
    file = open(params["path"], "rb")  # noqa: SIM115 - the server closes the wrapper
    if "offset" in params:
        file.seek(int(params["offset"]))
    headers = [("Content-Type", "application/octet-stream")]
    if "count" in params:
        headers.append(("Content-Length", params["count"]))
    start_response("200 OK", headers)
    return environ["wsgi.file_wrapper"](file, 65536)
