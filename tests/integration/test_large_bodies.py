"""Large responses go out as head plus the app's own body object in one vectored write
(``writelines``), not copied into one buffer: the client must still get every byte, in order,
on both event loops, with and without keep-alive reuse afterwards."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
from processes import Tiercel

APP = """
BODY = bytes(range(256)) * 4096 * 3  # 3 MiB, every byte value, so a lost or moved piece shows


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})
"""
BODY = bytes(range(256)) * 4096 * 3


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    while len(rest) < length:
        chunk = sock.recv(1 << 20)
        assert chunk, "the connection closed before the body ended"
        rest += chunk
    return head, rest


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_large_bodies_arrive_whole_on_a_reused_connection(loop, tmp_path: Path):
    (tmp_path / "big_app.py").write_text(APP)
    with Tiercel(
        "big_app:app", "--urls", "http://127.0.0.1:0", "--loop", loop, cwd=tmp_path
    ) as server:
        host, port = server.url().removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            for _ in range(3):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                head, body = _read_response(sock)
                assert head.startswith(b"HTTP/1.1 200 ")
                assert hashlib.sha256(body).digest() == hashlib.sha256(BODY).digest()
