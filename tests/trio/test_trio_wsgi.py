"""WSGI apps on the trio adapter: worker threads that reach the engine through trio.from_thread."""

from __future__ import annotations

import hashlib
import socket
import time

import httpx
from support import recv_until_closed
from trio_apps import MB, STATE, pattern, wsgi_app
from trio_harness import dechunk


def test_wsgi_get_post_and_keep_alive(trio_serve):
    server = trio_serve(wsgi_app)
    assert server.server.interface == "wsgi"
    with httpx.Client(base_url=server.url, timeout=5) as client:
        first = client.get("/a")
        assert first.text.startswith("GET /a 0 tiercel-wsgi")
        second = client.post("/b", content=b"x" * 300_000)
        head, _, body = second.content.partition(b"\n")
        assert head.startswith(b"POST /b 300000 ") and body == b"x" * 300_000


def test_wsgi_20mb_upload_and_streamed_download(trio_serve):
    server = trio_serve(wsgi_app)
    data = pattern(20 * MB)
    with httpx.Client(base_url=server.url, timeout=20) as client:
        response = client.post("/hash", content=data)
        assert response.text == f"{hashlib.sha256(data).hexdigest()} {len(data)}"
        digest, size = hashlib.sha256(), 0
        with client.stream("GET", "/download?mb=20") as response:
            for part in response.iter_bytes():
                digest.update(part)
                size += len(part)
        assert (size, digest.hexdigest()) == (len(data), hashlib.sha256(data).hexdigest())


def test_wsgi_download_back_pressure(trio_serve):
    server = trio_serve(wsgi_app)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET /download?mb=40 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    time.sleep(0.5)
    stalled_at = STATE.sent
    time.sleep(0.3)
    assert STATE.sent == stalled_at < 20 * MB  # the app's thread waits for the socket
    _, _, body = recv_until_closed(sock, timeout=20).partition(b"\r\n\r\n")
    assert dechunk(body) == pattern(40 * MB)


def test_wsgi_app_blocked_past_the_shutdown_timeout_is_abandoned(trio_serve):
    server = trio_serve(wsgi_app, shutdown_timeout=0.3)
    sock = server.connect()
    sock.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
    assert STATE.started.wait(5)
    began = time.monotonic()
    server.stop(timeout=5)
    assert time.monotonic() - began < 2
    assert recv_until_closed(sock, timeout=2) == b""
    STATE.gate.set()  # the abandoned thread ends; it touches the stopped server no more
    time.sleep(0.1)
