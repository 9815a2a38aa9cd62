"""HTTP/1.1 through the trio adapter, with httpx and raw sockets."""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import logging
import random
import socket
import threading
import time

import httpx
import pytest
from support import recv_until_closed
from tiercel.core.config import Limits
from trio_apps import MB, STATE, app, pattern
from trio_harness import dechunk, read_response


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_closed(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_get_post_and_keep_alive(trio_serve):
    server = trio_serve(app)
    with httpx.Client(base_url=server.url, timeout=5) as client:
        first = client.get("/hello?x=1")
        assert first.status_code == 200
        assert first.text == "GET /hello x=1 0\n"
        assert first.headers["server"] == "tiercel"
        sent = email.utils.parsedate_to_datetime(first.headers["date"]).timestamp()
        assert abs(sent - time.time()) < 3
        second = client.post("/form", content=b"a=1&b=2")
        assert second.text == "POST /form  7\na=1&b=2"
        third = client.put("/put", content=b"")
        assert third.text == "PUT /put  0\n"
        ports = {r.headers["x-client-port"] for r in (first, second, third)}
        assert len(ports) == 1, "keep-alive: all three requests used one connection"


def test_pipelined_requests_answered_in_order(trio_serve):
    server = trio_serve(app)
    sock = server.connect()
    sock.sendall(
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    data = recv_until_closed(sock)
    bodies = [b"GET /one  0\n", b"POST /two  5\nhello", b"GET /three  0\n"]
    positions = [data.find(body) for body in bodies]
    assert all(p > 0 for p in positions), data
    assert positions == sorted(positions)
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 3


def test_chunked_request_and_response_bodies(trio_serve):
    server = trio_serve(app)
    sock = server.connect()
    sock.sendall(
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
    )
    head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == b"POST /up  12\nhello, world"
    sock.sendall(b"GET /chunks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = recv_until_closed(sock).partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert dechunk(body) == b"first,second,third"


def test_20mb_upload_and_download(trio_serve):
    server = trio_serve(app)
    data = pattern(20 * MB)
    with httpx.Client(base_url=server.url, timeout=20) as client:
        response = client.post("/hash", content=data)
        assert response.text == f"{sha256(data)} {len(data)}"

        def pieces():
            for offset in range(0, len(data), 1_000_000):
                yield data[offset : offset + 1_000_000]

        response = client.post("/hash", content=pieces())  # chunked upload
        assert response.text == f"{sha256(data)} {len(data)}"
        digest, size = hashlib.sha256(), 0
        with client.stream("GET", "/download?mb=20") as response:
            for part in response.iter_bytes():
                digest.update(part)
                size += len(part)
        assert size == len(data)
        assert digest.hexdigest() == sha256(data)


def test_download_back_pressure(trio_serve):
    """The client reads nothing: the app's send() waits instead of buffering 40 MiB."""
    server = trio_serve(app)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET /download?mb=40 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    time.sleep(0.5)
    stalled_at = STATE.sent
    time.sleep(0.3)
    assert STATE.sent == stalled_at
    assert STATE.sent < 20 * MB
    assert not STATE.finished.is_set()
    data = recv_until_closed(sock, timeout=20)
    _, _, body = data.partition(b"\r\n\r\n")
    decoded = dechunk(body)
    assert len(decoded) == 40 * MB
    assert sha256(decoded) == sha256(pattern(40 * MB))


def test_upload_back_pressure(trio_serve):
    """The app reads nothing yet: the adapter stops reading, so the client cannot send it all."""
    server = trio_serve(app)
    data = random.Random(11).randbytes(16 * MB)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(
        b"POST /hash?gated=1 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % len(data)
    )
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 0.8
    while time.monotonic() < deadline and sent < len(data):
        try:
            sent += sock.send(data[sent : sent + 65536])
        except BlockingIOError:
            time.sleep(0.01)
    assert sent < 8 * MB, sent
    STATE.gate.set()
    sock.setblocking(True)
    sock.settimeout(20)
    sock.sendall(data[sent:])
    head, body = read_response(sock, timeout=20)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == f"{sha256(data)} {len(data)}".encode()


def test_limits_413_431_and_timeouts_408(trio_serve):
    limits = Limits(max_request_body_size=1000, request_headers_timeout=0.5, keep_alive_timeout=0.6)
    server = trio_serve(app, limits=limits)
    wall_time = server.server.context.wall_time

    sock = server.connect()
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n" + b"a" * 1001)
    data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 413 Content Too Large\r\n"), data
    assert b"connection: close" in data.lower()

    sock = server.connect()
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(101))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert recv_until_closed(sock).startswith(b"HTTP/1.1 431 Request Header Fields Too Large")

    sock = server.connect()
    started = time.monotonic()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # headers that never end
    data = recv_until_closed(sock, timeout=3)
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data
    assert 0.4 < time.monotonic() - started < 1.5

    sock = server.connect()  # keep-alive timeout after a response
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(sock)[0].startswith(b"HTTP/1.1 200 OK")
    started = time.monotonic()
    assert not is_closed(sock, 0.3)
    assert is_closed(sock, 2)
    assert 0.5 < time.monotonic() - started < 1.5
    assert server.server.context.wall_time > wall_time  # the Date ticker runs


def test_max_concurrent_connections(trio_serve):
    server = trio_serve(app, limits=Limits(max_concurrent_connections=1))
    first = server.connect()
    first.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(first)[0].startswith(b"HTTP/1.1 200 OK")
    with contextlib.suppress(OSError):  # reset at once (perhaps before connect returns)
        second = server.connect()
        second.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert recv_until_closed(second, timeout=2) == b""
    assert server.server.context.rejections["connection_limit"] >= 1
    first.close()
    deadline = time.monotonic() + 3
    while True:  # the slot frees once the server has seen the close
        try:
            third = server.connect()
            third.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = recv_until_closed(third, timeout=2)
        except OSError:
            data = b""
        if data or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert data.startswith(b"HTTP/1.1 200 OK")


def test_engine_abort_resets_the_connection(trio_serve, caplog):
    server = trio_serve(app)
    sock = server.connect()
    sock.sendall(b"GET /partial HTTP/1.1\r\nHost: x\r\n\r\n")
    data = recv_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert len(body) < 100_000  # cut off: the client can tell the response is incomplete
    assert "the app fails half way" in caplog.text
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/after").status_code == 200  # the server serves on


def test_scope_extensions_addresses_and_early_hints(trio_serve):
    server = trio_serve(app)
    assert server.server.addresses == [server.url]
    response = httpx.get(f"{server.url}/scope", timeout=5)
    info = json.loads(response.text)
    assert info["http_version"] == "1.1"
    assert info["server"] == ["127.0.0.1", server.port]
    assert "tiercel.server_addresses" in info["extensions"]
    assert "http.response.informational" in info["extensions"]
    assert info["addresses"] == {"addresses": [server.url]}
    assert info["state"] == {"greeting": "hello from lifespan"}
    assert info["runtime"] == "trio"

    sock = server.connect()
    sock.sendall(b"GET /early HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 103 Early Hints\r\n"), data
    assert b"link: </style.css>; rel=preload" in data.lower()
    assert b"\r\n\r\nHTTP/1.1 200 OK\r\n" in data
    assert data.endswith(b"after hints")


def test_trio_native_and_anyio_apps_run_concurrently(trio_serve):
    server = trio_serve(app)
    results: list[httpx.Response] = []

    def fetch(path: str) -> None:
        results.append(httpx.get(f"{server.url}{path}", timeout=5))

    began = time.monotonic()
    threads = [threading.Thread(target=fetch, args=("/sleep?s=0.5",)) for _ in range(10)]
    threads += [threading.Thread(target=fetch, args=("/anyio",)) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert time.monotonic() - began < 2.5, "the apps did not run concurrently"
    assert sorted(r.status_code for r in results) == [200] * 15
    texts = {r.text.partition("\n")[0] for r in results}
    assert texts == {"slept 0.5", "[0, 1, 2, 3, 4]"}


def test_access_and_rejection_logs(trio_serve, caplog):
    caplog.set_level(logging.INFO, logger="tiercel")
    server = trio_serve(app, access_log=True)
    assert httpx.get(f"{server.url}/logged?q=1", timeout=5).status_code == 200
    sock = server.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 40_000 + b"\r\n\r\n")
    assert recv_until_closed(sock).startswith(b"HTTP/1.1 431")
    access = [r.getMessage() for r in caplog.records if r.name == "tiercel.access"]
    assert any('"GET /logged?q=1 HTTP/1.1" 200' in line for line in access), access
    rejected = [r.getMessage() for r in caplog.records if r.name == "tiercel.rejections"]
    assert any(line.startswith("rejected 431 from 127.0.0.1:") for line in rejected), rejected


def test_unix_socket(trio_serve, tmp_path):
    path = tmp_path / "tiercel.sock"
    server = trio_serve(app, urls=f"unix:{path}")
    assert server.server.addresses == [f"unix:{path}"]
    transport = httpx.HTTPTransport(uds=str(path))
    with httpx.Client(transport=transport, base_url="http://localhost", timeout=5) as client:
        response = client.get("/scope")
        info = json.loads(response.text)
        assert info["server"] == [str(path), None]
        assert client.post("/u", content=b"abc").text == "POST /u  3\nabc"
    server.stop()
    assert not path.exists(), "the socket file is removed on stop"


@pytest.mark.parametrize("sleep", [0.0, 0.05])
def test_many_short_connections(trio_serve, sleep):
    """Connections that come and go (some closing mid-request) leave nothing behind."""
    server = trio_serve(app)
    for i in range(30):
        sock = server.connect()
        if i % 3 == 0:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # leaves half way
        else:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert recv_until_closed(sock).startswith(b"HTTP/1.1 200 OK")
        sock.close()
        time.sleep(sleep / 10)
    deadline = time.monotonic() + 3
    while server.server.connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not server.server.connections
    assert server.server.context.open_connections == 0


def test_lingering_close_delivers_413_to_a_client_still_sending(trio_serve):
    """Closing with unread bytes would send a reset that destroys the 413 before the client
    reads it; the adapter sends FIN and reads on (discarding) until the client is done."""
    server = trio_serve(app, limits=Limits(max_request_body_size=1000))
    for _ in range(3):
        sock = server.connect()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")
        sock.setblocking(False)
        for pause in (0.2, 0.1):  # the client sends its body and reads only later
            for _ in range(10):
                with contextlib.suppress(BlockingIOError):
                    sock.send(b"z" * 65536)
            time.sleep(pause)
        sock.setblocking(True)
        data = recv_until_closed(sock, timeout=3)
        assert data.startswith(b"HTTP/1.1 413 Content Too Large\r\n"), data
        sock.close()
