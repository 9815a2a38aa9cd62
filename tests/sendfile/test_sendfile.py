"""Direct file transmission over real sockets on every adapter: os.sendfile on plaintext
HTTP/1.1 (the ``sendfile_bytes`` counter shows it was used), the read loop on TLS and HTTP/2."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from file_apps import asgi_file_app, wsgi_file_app
from response_cache.adapter_servers import AdapterServer
from support import recv_until_closed, require_peer, write_certificate
from tiercel.apps.tls import CertificateFiles, TlsOptions
from tiercel.core.config import DataRate, EngineConfig, Limits

SIZE = 20_000_000
SETUPS = [
    ("asyncio", "asgi"),
    ("trio", "asgi"),
    ("asyncio", "wsgi"),
    ("trio", "wsgi"),
    ("threads", "wsgi"),
]

Start = Callable[..., AdapterServer]


def counted(server: AdapterServer, name: str, expected: int) -> int:
    """The file counter once it reaches ``expected`` (or after 5 s): the server counts after
    its last write, which the client may see first."""
    deadline = time.monotonic() + 5
    while server.context.file_counters[name] != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return server.context.file_counters[name]


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    path = tmp_path_factory.mktemp("sendfile") / "big.bin"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, data


@pytest.fixture(scope="module")
def tls_options(tmp_path_factory: pytest.TempPathFactory) -> tuple[TlsOptions, Path]:
    pems = write_certificate(tmp_path_factory.mktemp("sendfile-certs"))
    return TlsOptions(default=CertificateFiles(str(pems.cert), str(pems.key))), pems.ca


@pytest.fixture(params=SETUPS, ids=[f"{a}-{i}" for a, i in SETUPS])
def setup(request: pytest.FixtureRequest) -> tuple[str, str]:
    adapter, interface = request.param
    return adapter, interface


@pytest.fixture
def start(setup: tuple[str, str]) -> Iterator[Start]:
    adapter, interface = setup
    servers: list[AdapterServer] = []

    def start(**options: Any) -> AdapterServer:
        app = asgi_file_app if interface == "asgi" else wsgi_file_app
        server = AdapterServer(adapter, app, interface=interface, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _file_url(setup: tuple[str, str], path: Path, **params: Any) -> str:
    # ASGI: /pathsend, or /zerocopysend when a range is asked for; WSGI: any path.
    route = "/zerocopysend" if params else "/pathsend"
    query = "&".join([f"path={path}", *(f"{k}={v}" for k, v in params.items())])
    return f"{route}?{query}"


def test_large_file_over_plaintext_http1_uses_sendfile(
    start: Start, setup: tuple[str, str], big_file: tuple[Path, bytes]
) -> None:
    path, data = big_file
    server = start()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.get(_file_url(setup, path))
        again = client.get(_file_url(setup, path))  # keep-alive: the connection is in step
    assert response.status_code == 200
    assert response.headers["content-length"] == str(SIZE)
    assert "transfer-encoding" not in response.headers
    assert response.content == data
    assert again.content == data
    assert counted(server, "sendfile_bytes", 2 * SIZE) == 2 * SIZE
    assert counted(server, "sendfile_files", 2) == 2


def test_head_gives_the_size_and_no_body(
    start: Start, setup: tuple[str, str], big_file: tuple[Path, bytes]
) -> None:
    path, _ = big_file
    server = start()
    with httpx.Client(base_url=server.url) as client:
        head = client.head(_file_url(setup, path))
    assert head.status_code == 200
    assert head.headers["content-length"] == str(SIZE)
    assert head.content == b""
    assert server.context.file_counters["sendfile_bytes"] == 0


def test_a_range_of_the_file(
    start: Start, setup: tuple[str, str], big_file: tuple[Path, bytes]
) -> None:
    path, data = big_file
    server = start()
    with httpx.Client(base_url=server.url) as client:
        response = client.get(_file_url(setup, path, offset=12_345, count=1_000_000))
    assert response.content == data[12_345 : 12_345 + 1_000_000]
    assert response.headers["content-length"] == "1000000"
    assert counted(server, "sendfile_bytes", 1_000_000) == 1_000_000


def test_large_file_over_http2_is_intact(
    start: Start, setup: tuple[str, str], big_file: tuple[Path, bytes]
) -> None:
    path, data = big_file
    server = start()
    with httpx.Client(base_url=server.url, http1=False, http2=True, timeout=60) as client:
        response = client.get(_file_url(setup, path))
    assert response.http_version == "HTTP/2"
    assert response.content == data
    assert server.context.file_counters["sendfile_bytes"] == 0


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2"])
def test_large_file_over_tls_is_intact(
    start: Start,
    setup: tuple[str, str],
    big_file: tuple[Path, bytes],
    tls_options: tuple[TlsOptions, Path],
    http2: bool,
) -> None:
    path, data = big_file
    tls, ca_pem = tls_options
    server = start(urls="https://127.0.0.1:0", tls=tls)
    with httpx.Client(
        base_url=server.url,
        verify=ssl.create_default_context(cafile=str(ca_pem)),
        http1=not http2,
        http2=http2,
        timeout=60,
    ) as client:
        response = client.get(_file_url(setup, path))
    assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert response.content == data
    assert server.context.file_counters["sendfile_bytes"] == 0


@pytest.mark.peer("curl")
def test_curl_downloads_the_file(
    start: Start, setup: tuple[str, str], big_file: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, data = big_file
    server = start()
    out = tmp_path / "download.bin"
    result = subprocess.run(
        [
            require_peer("curl"),
            "--silent",
            "--show-error",
            "--noproxy",
            "*",
            "--output",
            str(out),
            server.url + _file_url(setup, path),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == data
    assert counted(server, "sendfile_bytes", SIZE) == SIZE


# -- ASGI only ---------------------------------------------------------------------------------


@pytest.fixture(params=["asyncio", "trio"])
def asgi_server(request: pytest.FixtureRequest) -> Iterator[AdapterServer]:
    server = AdapterServer(request.param, asgi_file_app).start()
    yield server
    server.stop()


def test_zerocopysend_with_more_body_is_chunked_around_the_file(
    asgi_server: AdapterServer, big_file: tuple[Path, bytes]
) -> None:
    path, data = big_file
    with httpx.Client(base_url=asgi_server.url) as client:
        response = client.get(f"/zerocopysend?path={path}&offset=100&count=5000&tail=END")
        after = client.get(f"/zerocopysend?path={path}&count=10")
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content == data[100:5100] + b"END"
    assert after.content == data[:10]
    assert counted(asgi_server, "sendfile_bytes", 5010) == 5010


def test_pathsend_of_a_missing_file_is_a_500_with_a_clear_log_line(
    asgi_server: AdapterServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no-such-file.bin"
    with (
        caplog.at_level(logging.ERROR, logger="tiercel"),
        httpx.Client(base_url=asgi_server.url) as client,
    ):
        response = client.get(f"/pathsend?path={missing}")
        still_serving = client.get(f"/zerocopysend?path={missing.parent / 'x'}&count=1")
    assert response.status_code == 500
    assert still_serving.status_code == 500
    assert f"http.response.pathsend: cannot open {str(missing)!r}" in caplog.text


def test_head_over_http2_gives_the_size(
    start: Start, setup: tuple[str, str], big_file: tuple[Path, bytes]
) -> None:
    path, data = big_file
    server = start()
    with httpx.Client(base_url=server.url, http1=False, http2=True) as client:
        head = client.head(_file_url(setup, path))
        after = client.get(_file_url(setup, path, count=10))  # the connection survived
    assert head.status_code == 200
    assert head.headers["content-length"] == str(SIZE)
    assert after.content == data[:10]


def test_a_client_that_stops_reading_the_file_is_cut_off(
    start: Start, setup: tuple[str, str], big_file: tuple[Path, bytes]
) -> None:
    path, _ = big_file
    # The file must be read at 100 MB/s after a 0.5 s grace: a client that reads nothing fails.
    limits = Limits(min_response_data_rate=DataRate(bytes_per_second=100e6, grace_period=0.5))
    server = start(engine=EngineConfig(limits=limits))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    target = _file_url(setup, path)
    sock.sendall(f"GET {target} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    time.sleep(1.5)
    received = len(recv_until_closed(sock, timeout=10))
    sock.close()
    assert received < SIZE
    deadline = time.monotonic() + 5
    while not server.context.rejections["response_data_rate"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.context.rejections["response_data_rate"] == 1
    with httpx.Client(base_url=server.url) as client:  # the server is still serving
        assert client.head(target).status_code == 200
