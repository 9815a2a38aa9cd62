"""The adapter in-process, inside the Windows interpreter, against the real httpapi.dll.

pytest runs this module in the Windows CPython itself: under Wine, test_windows_interpreter.py
starts it with TIERCEL_HTTPSYS_OUTSIDE_CLIENT=1 and sends the request from the Linux side when
the server prints its URL; on Windows with the variable unset, the test is its own client.
On Linux CPython there is no httpapi.dll, so it is skipped here.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from typing import Any

import pytest
from tiercel.adapters.httpsys.adapter import HttpSysServer
from tiercel.apps.options import ServerOptions

pytestmark = pytest.mark.skipif(
    sys.platform != "win32",
    reason="needs httpapi.dll: runs inside the Windows interpreter "
    "(test_windows_interpreter.py drives it under Wine)",
)

OUTSIDE_CLIENT = os.environ.get("TIERCEL_HTTPSYS_OUTSIDE_CLIENT") == "1"
OUTSIDE_BODY = b"from the other side"  # what the outside client sends


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def own_client(port: int) -> bytes:
    """An HTTP/1.1 request over a real socket from this process, as the outside client sends it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /inside/a%20b?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (port, len(OUTSIDE_BODY), OUTSIDE_BODY)
    )
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return response


def test_the_adapter_in_this_interpreter_serves_a_real_client():
    port = free_port()
    seen: list[dict[str, Any]] = []
    answered = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append({**scope, "body": body})
        reply = json.dumps(
            {"method": scope["method"], "path": scope["path"], "body": body.decode()}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"x-served-by", b"in-process")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply})
        answered.set()

    options = ServerOptions(
        urls=f"http://127.0.0.1:{port}/",
        adapter="httpsys",
        access_log=False,
        lifespan="off",
        shutdown_timeout=5,
    )

    async def main() -> bytes | None:
        server = HttpSysServer(app, options)
        await server.start()
        try:
            if OUTSIDE_CLIENT:
                print(f"SERVING http://127.0.0.1:{port}/", flush=True)
                await asyncio.wait_for(answered.wait(), 120)
                return None
            return await own_client(port)
        finally:
            await server.stop()

    response = asyncio.run(main())
    if response is not None:
        assert response.startswith(b"HTTP/1.1 200")
        assert b"x-served-by: in-process" in response.lower()
    (scope,) = seen
    assert scope["method"] == "POST"
    assert scope["path"] == "/inside/a b"
    assert scope["raw_path"] == b"/inside/a%20b"
    assert scope["query_string"] == b"x=1"
    assert scope["body"] == OUTSIDE_BODY
    assert scope["client"][0] == "127.0.0.1"
    assert list(scope["server"]) == ["127.0.0.1", port]
