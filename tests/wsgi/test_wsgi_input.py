"""wsgi.input streams the request body to the app as it arrives; nothing buffers it whole."""

from __future__ import annotations

import socket
import threading
import time

from support import recv_until_closed
from wsgi_apps import STATE, plain_app

MiB = 1024 * 1024
TOTAL = 20 * MiB
PART = b"x" * 65536


def test_a_20_mb_upload_reaches_the_app_while_it_is_being_sent(wsgi_serve):
    server = wsgi_serve(plain_app)
    sock = server.connect(timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sock.sendall(
        f"POST /upload?gate HTTP/1.1\r\nHost: x\r\nContent-Length: {TOTAL}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    progress = [0]

    def send_body() -> None:
        while progress[0] < TOTAL:
            sock.sendall(PART)
            progress[0] += len(PART)

    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    # The app reads its first 64 KiB long before the client has sent the body ...
    assert STATE.event("upload_started").wait(5)
    # ... and while it holds its next read, the server reads no further than its buffer
    # allows: the client's sends stall far short of 20 MB (back-pressure, memory bounded).
    stalled_at = -1
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and stalled_at != progress[0]:
        stalled_at = progress[0]
        time.sleep(0.5)
    assert stalled_at == progress[0], "the client never stalled"
    assert stalled_at < TOTAL - 4 * MiB, f"the server took {stalled_at} bytes; the app read 64 KiB"
    assert STATE.upload_total < 2 * MiB
    STATE.event("upload_release").set()
    sender.join(10)
    assert progress[0] == TOTAL
    answer = recv_until_closed(sock, timeout=10)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:200]
    assert answer.endswith(b"\r\n\r\n" + str(TOTAL).encode())
    assert STATE.upload_total == TOTAL
    assert STATE.upload_max_read == 65536
    assert all(size == 65536 for size in STATE.upload_reads)  # read(n) gives n until the end


def test_413_when_the_body_is_larger_than_the_limit(wsgi_serve):
    from tiercel.core.config import Limits

    server = wsgi_serve(plain_app, limits=Limits(max_request_body_size=1000))
    with server.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        sock.sendall(b"y" * 5000)
        answer = recv_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413 ")
