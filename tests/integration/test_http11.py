"""HTTP/1.1 over real sockets, with real clients: curl, httpx and raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import random
import re
import socket
import subprocess
import threading
import time
from http import HTTPStatus

import httpx
import pytest
from support import echo_app, recv_until_closed, require_peer
from tiercel.core.config import DataRate, Limits

MB = 1024 * 1024
DOWNLOAD_CHUNK = 64 * 1024
# tiercel sends RFC 9110's reason phrases whatever Python's http.HTTPStatus says.
STATUS_413 = b"HTTP/1.1 413 Content Too Large\r\n"
STATUS_414 = b"HTTP/1.1 414 URI Too Long\r\n"
DOWNLOAD = random.Random(1234).randbytes(10 * MB)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class HashApp:
    """GET /download[?mb=N] streams N MiB (default 10) in 64 KiB chunks; any other request
    answers with the sha256 and length of its body. Records scopes and send progress."""

    def __init__(self) -> None:
        self.scopes: list[dict] = []
        self.sent = 0
        self.finished = threading.Event()
        self.read_gate: asyncio.Event | None = None
        self.gate_loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        self.scopes.append(scope)
        if scope["path"] == "/download":
            await self.download(scope, receive, send)
            return
        if scope["path"] == "/gated":
            self.gate_loop = asyncio.get_running_loop()
            self.read_gate = asyncio.Event()
            await self.read_gate.wait()
        digest = hashlib.sha256()
        size = 0
        while True:
            message = await receive()
            body = message.get("body", b"")
            digest.update(body)
            size += len(body)
            if not message.get("more_body"):
                break
        answer = f"{digest.hexdigest()} {size}".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"x-client-port", b"%d" % scope["client"][1]),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})
        self.finished.set()

    def open_gate(self) -> None:
        assert self.gate_loop is not None and self.read_gate is not None
        self.gate_loop.call_soon_threadsafe(self.read_gate.set)

    async def download(self, scope, receive, send) -> None:
        megabytes = int(scope["query_string"].decode().partition("=")[2] or 10)
        data = DOWNLOAD * (megabytes // 10) + DOWNLOAD[: (megabytes % 10) * MB]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        view = memoryview(data)
        for offset in range(0, len(data), DOWNLOAD_CHUNK):
            chunk = view[offset : offset + DOWNLOAD_CHUNK]
            await send({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
            self.sent += len(chunk)
        await send({"type": "http.response.body", "body": b""})
        self.finished.set()


def curl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[bytes]:
    path = require_peer("curl")
    return subprocess.run(
        [path, "--silent", "--show-error", "--noproxy", "*", *args],
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def read_response(sock: socket.socket, timeout: float = 5) -> tuple[bytes, bytes]:
    """One Content-Length framed response: (head, body)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length: *(\d+)\r?$", head)
    length = int(match.group(1)) if match else 0
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


def is_closed(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


# -- curl -------------------------------------------------------------------------------------


@pytest.mark.peer("curl")
def test_curl_keep_alive_reuses_the_connection(serve):
    app = HashApp()
    server = serve(app)
    result = curl("-v", f"{server.url}/a", f"{server.url}/b")
    assert result.returncode == 0, result.stderr
    assert b"Re-using existing connection" in result.stderr
    assert len(app.scopes) == 2
    assert app.scopes[0]["client"] == app.scopes[1]["client"]


@pytest.mark.peer("curl")
def test_curl_chunked_upload(serve, tmp_path):
    app = HashApp()
    server = serve(app)
    data = random.Random(5).randbytes(300_000)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(data)
    result = curl(
        "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{upload}", f"{server.url}/up"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{sha256(data)} {len(data)}".encode()
    headers = dict(app.scopes[0]["headers"])
    assert headers[b"transfer-encoding"] == b"chunked"
    assert b"content-length" not in headers


@pytest.mark.peer("curl")
def test_curl_large_upload_and_download_with_checksums(serve, tmp_path):
    app = HashApp()
    server = serve(app)
    data = random.Random(7).randbytes(5 * MB)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(data)
    result = curl("--data-binary", f"@{upload}", f"{server.url}/up")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{sha256(data)} {len(data)}".encode()

    target = tmp_path / "download.bin"
    result = curl("-o", str(target), "-D", "-", f"{server.url}/download")
    assert result.returncode == 0, result.stderr
    assert b"transfer-encoding: chunked" in result.stdout.lower()
    downloaded = target.read_bytes()
    assert len(downloaded) == len(DOWNLOAD)
    assert sha256(downloaded) == sha256(DOWNLOAD)


@pytest.mark.peer("curl")
def test_curl_expect_100_continue(serve, tmp_path):
    app = HashApp()
    server = serve(app)
    data = b"z" * 200_000
    upload = tmp_path / "upload.bin"
    upload.write_bytes(data)
    result = curl(
        "-v",
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "10",
        "--data-binary",
        f"@{upload}",
        f"{server.url}/up",
    )
    assert result.returncode == 0, result.stderr
    assert b"HTTP/1.1 100 Continue" in result.stderr
    assert result.stdout == f"{sha256(data)} {len(data)}".encode()


@pytest.mark.peer("curl")
def test_curl_head_returns_headers_without_body(serve):
    server = serve(echo_app)
    result = curl("-I", f"{server.url}/h")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-type: text/plain" in result.stdout.lower()
    assert result.stdout.endswith(b"\r\n\r\n")


@pytest.mark.peer("curl")
def test_curl_413_for_a_body_over_the_limit(serve, tmp_path):
    server = serve(echo_app, limits=Limits(max_request_body_size=1000))
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"x" * 5000)
    result = curl("-i", "--data-binary", f"@{upload}", f"{server.url}/up")
    assert result.stdout.startswith(STATUS_413), result.stdout
    result = curl("-i", "--data-binary", "small", f"{server.url}/up")
    assert result.stdout.startswith(b"HTTP/1.1 200 OK\r\n")


# -- httpx ------------------------------------------------------------------------------------


def test_httpx_large_upload_and_download(serve):
    app = HashApp()
    server = serve(app)
    data = random.Random(9).randbytes(5 * MB)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        response = client.post("/up", content=data)
        assert response.text == f"{sha256(data)} {len(data)}"

        def chunks():
            for offset in range(0, len(data), 100_000):
                yield data[offset : offset + 100_000]

        response = client.post("/up", content=chunks())  # chunked upload
        assert response.text == f"{sha256(data)} {len(data)}"

        digest = hashlib.sha256()
        with client.stream("GET", "/download") as response:
            for part in response.iter_bytes():
                digest.update(part)
        assert digest.hexdigest() == sha256(DOWNLOAD)
        # Both requests went over one connection.
        ports = {scope["client"][1] for scope in app.scopes}
        assert len(ports) == 1


def test_httpx_413_for_chunked_body_over_the_limit(serve):
    server = serve(echo_app, limits=Limits(max_request_body_size=10_000))

    def chunks():
        for _ in range(10):
            yield b"y" * 4000

    with httpx.Client(base_url=server.url, timeout=5) as client:
        response = client.post("/", content=chunks())
        assert response.status_code == 413
        assert response.headers["connection"] == "close"
        assert client.post("/", content=b"ok").status_code == 200


# -- back-pressure --------------------------------------------------------------------------


def test_download_back_pressure(serve):
    app = HashApp()
    server = serve(app)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET /download?mb=40 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    time.sleep(0.5)
    stalled_at = app.sent
    time.sleep(0.3)
    # The client reads nothing: the app's send() waits instead of buffering 40 MiB.
    assert app.sent == stalled_at
    assert app.sent < 20 * MB
    assert not app.finished.is_set()
    data = recv_until_closed(sock, timeout=20)
    _, _, body = data.partition(b"\r\n\r\n")
    assert app.finished.is_set()
    decoded = b"".join(_dechunk(body))
    assert len(decoded) == 40 * MB
    assert sha256(decoded) == sha256(DOWNLOAD * 4)


def _dechunk(body: bytes):
    offset = 0
    while True:
        end = body.index(b"\r\n", offset)
        size = int(body[offset:end], 16)
        if size == 0:
            return
        yield body[end + 2 : end + 2 + size]
        offset = end + 2 + size + 2


def test_upload_back_pressure(serve):
    app = HashApp()
    server = serve(app)
    data = random.Random(11).randbytes(16 * MB)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(
        b"POST /gated HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % len(data)
    )
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 0.8
    while time.monotonic() < deadline and sent < len(data):
        try:
            sent += sock.send(data[sent : sent + 65536])
        except BlockingIOError:
            time.sleep(0.01)
    # The app reads nothing yet: the server stops reading, so the client cannot send it all.
    assert sent < 8 * MB, sent
    app.open_gate()
    sock.setblocking(True)
    sock.settimeout(20)
    sock.sendall(data[sent:])
    head, body = read_response(sock, timeout=20)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == f"{sha256(data)} {len(data)}".encode()


def test_expect_100_continue_raw(serve):
    app = HashApp()
    server = serve(app)
    sock = server.connect()
    sock.sendall(
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    sock.settimeout(5)
    interim = sock.recv(1000)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(b"hello")
    head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == f"{sha256(b'hello')} 5".encode()


# -- response heads ---------------------------------------------------------------------------


async def status_app(scope, receive, send):
    if scope["type"] != "http":
        return
    status = int(scope["path"].strip("/"))
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"" if status in (204, 304) else b"b"})


def test_head_has_no_body(serve):
    server = serve(echo_app)
    sock = server.connect()
    sock.sendall(b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = recv_until_closed(sock)
    head, sep, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert sep
    assert body == b""


@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        (200, b"OK"),
        (201, b"Created"),
        (204, b"No Content"),
        (299, b"Success"),
        (301, b"Moved Permanently"),
        (304, b"Not Modified"),
        (404, b"Not Found"),
        (418, HTTPStatus(418).phrase.encode()),
        (422, b"Unprocessable Content"),
        (451, b"Unavailable For Legal Reasons"),
        (499, b"Client Error"),
        (500, b"Internal Server Error"),
        (503, b"Service Unavailable"),
        (599, b"Server Error"),
    ],
)
def test_reason_phrase_on_every_status_line(serve, status, phrase):
    server = serve(status_app)
    sock = server.connect()
    sock.sendall(b"GET /%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % status)
    status_line = recv_until_closed(sock).split(b"\r\n", 1)[0]
    assert re.fullmatch(rb"HTTP/1\.1 \d{3} [^\r\n]+", status_line)
    assert status_line.lower() == b"http/1.1 %d %s" % (status, phrase.lower())


def test_reason_phrase_on_engine_error_responses(serve):
    server = serve(echo_app)
    for request in (
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"CONNECT x:1 HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        sock = server.connect()
        sock.sendall(request)
        status_line = recv_until_closed(sock).split(b"\r\n", 1)[0]
        assert re.fullmatch(rb"HTTP/1\.1 [45]\d\d [A-Za-z][^\r\n]*", status_line), request


def test_date_header_format(serve):
    server = serve(echo_app)
    with httpx.Client(timeout=5) as client:
        response = client.get(server.url)
    date = response.headers["date"]
    assert re.fullmatch(
        r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
        r"\d{4} \d\d:\d\d:\d\d GMT",
        date,
    )
    assert abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time()) < 5


def test_server_header_default_and_off(serve):
    server = serve(echo_app)
    quiet = serve(echo_app, server_header=None)
    with httpx.Client(timeout=5) as client:
        assert client.get(server.url).headers["server"] == "tiercel"
        assert "server" not in client.get(quiet.url).headers
    sock = quiet.connect()
    sock.sendall(b"GET / HTTP/1.1\r\n\r\n")  # 400 from the engine itself
    data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nserver:" not in data.lower()


# -- limits -----------------------------------------------------------------------------------


def test_413_with_content_length(serve):
    server = serve(echo_app, limits=Limits(max_request_body_size=100))
    sock = server.connect()
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n" + b"a" * 101)
    data = recv_until_closed(sock)
    assert data.startswith(STATUS_413)
    assert b"connection: close" in data.lower()


def test_431_too_many_headers(serve):
    server = serve(echo_app)
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(101))
    sock = server.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")

    sock = server.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 40_000 + b"\r\n\r\n")
    data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


def test_414_long_request_line(serve):
    server = serve(echo_app)
    sock = server.connect()
    sock.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    data = recv_until_closed(sock)
    assert data.startswith(STATUS_414)
    # Just under the limit is fine.
    sock = server.connect()
    sock.sendall(b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert recv_until_closed(sock).startswith(b"HTTP/1.1 200 OK\r\n")


def test_request_headers_timeout_slowloris(serve):
    server = serve(echo_app, limits=Limits(request_headers_timeout=0.5))
    sock = server.connect()
    started = time.monotonic()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    sock.settimeout(0.2)
    received = b""
    while time.monotonic() - started < 3:
        try:
            sock.sendall(b"X")  # one more byte of a header that never ends
        except OSError:
            break
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), received
    assert 0.4 < elapsed < 1.5


def test_keep_alive_timeout_closes_idle_connection(serve):
    server = serve(echo_app, limits=Limits(keep_alive_timeout=0.5))
    sock = server.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _ = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200 OK")
    started = time.monotonic()
    assert not is_closed(sock, 0.3)  # still open before the timeout
    assert is_closed(sock, 2)
    assert 0.4 < time.monotonic() - started < 1.5


def test_a_keep_alive_timeout_beyond_the_heartbeat_horizon_still_closes_on_time(serve):
    """Far deadlines wait on the server's once-a-second heartbeat instead of a loop timer
    each (adapters/asyncio_adapter.py); the connection must still close when it is due."""
    from tiercel.adapters.asyncio_adapter import HEARTBEAT_HORIZON

    timeout = HEARTBEAT_HORIZON + 1.5
    server = serve(echo_app, limits=Limits(keep_alive_timeout=timeout))
    sock = server.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _ = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200 OK")
    started = time.monotonic()
    (connection,) = list(server.server._impl.connections)
    assert connection._timer is None  # no loop timer while idle: it waits on the heartbeat
    assert connection in server.server._impl.heartbeat
    assert not is_closed(sock, timeout - 0.5)
    assert is_closed(sock, 3)
    assert timeout - 0.1 < time.monotonic() - started < timeout + 1.5


def test_idle_connection_without_request_closes_after_keep_alive_timeout(serve):
    server = serve(echo_app, limits=Limits(keep_alive_timeout=0.5))
    sock = server.connect()
    started = time.monotonic()
    assert is_closed(sock, 2)
    assert 0.4 < time.monotonic() - started < 1.5


def test_min_request_body_rate_408(serve):
    limits = Limits(min_request_body_data_rate=DataRate(1000, 0.5))
    server = serve(echo_app, limits=limits)
    sock = server.connect()
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    sock.settimeout(0.1)
    started = time.monotonic()
    received = b""
    while time.monotonic() - started < 3:
        try:
            sock.sendall(b"0123456789")  # 100 bytes/s, far below 1000
        except OSError:
            break
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), received
    assert time.monotonic() - started < 2


def test_fast_body_passes_the_rate_check(serve):
    limits = Limits(min_request_body_data_rate=DataRate(1000, 0.2))
    server = serve(echo_app, limits=limits)
    sock = server.connect()
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n")
    for _ in range(4):
        time.sleep(0.1)
        sock.sendall(b"a" * 1000)  # ~10,000 bytes/s
    head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body.startswith(b"POST /  4000\n")


def test_max_concurrent_connections(serve):
    server = serve(echo_app, limits=Limits(max_concurrent_connections=2))
    first, second = server.connect(), server.connect()
    for sock in (first, second):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200 OK")
    third = server.connect()
    with contextlib.suppress(OSError):
        third.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert recv_until_closed(third, timeout=2) == b""
    # Closing one frees a slot.
    first.close()
    deadline = time.monotonic() + 3
    while True:
        fourth = server.connect()
        try:
            fourth.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = recv_until_closed(fourth, timeout=2)
        except OSError:
            data = b""
        if data or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert data.startswith(b"HTTP/1.1 200 OK")
    second.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(second)[0].startswith(b"HTTP/1.1 200 OK")
