"""The PROXY layer under each real adapter: refusals close the socket without a byte, and a
header sent by hand (v1 and v2, in pieces) gives the app the proxied client."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest
from pp_bytes import v2
from pp_servers import ADAPTERS, Backend
from support import recv_until_closed
from tiercel.core.proxy_protocol import ProxyProtocolSettings

GET = b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def serve(adapter: str, **settings: object) -> Iterator[Backend]:
    backend = Backend(adapter, ProxyProtocolSettings(**settings))  # type: ignore[arg-type]
    try:
        yield backend
    finally:
        backend.stop()


def connect(backend: Backend) -> socket.socket:
    return socket.create_connection(("127.0.0.1", backend.port), timeout=5)


@pytest.mark.parametrize(
    "header", [b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n", v2()], ids=["v1", "v2"]
)
def test_header_by_hand(adapter: str, header: bytes) -> None:
    for backend in serve(adapter, timeout=3.0):
        with connect(backend) as sock:
            for i in range(0, len(header), 7):
                sock.sendall(header[i : i + 7])
                time.sleep(0.005)
            sock.sendall(GET)
            data = recv_until_closed(sock)
        body = json.loads(data.partition(b"\r\n\r\n")[2])
        assert body["client"] in (["192.0.2.1", 56324], ["192.0.2.10", 51000])


def test_untrusted_peer_closed_at_once(adapter: str) -> None:
    for backend in serve(adapter, trusted=("192.0.2.0/24",), timeout=30.0):
        with connect(backend) as sock:
            started = time.monotonic()
            assert recv_until_closed(sock, timeout=5) == b""
            assert time.monotonic() - started < 4


def test_missing_header_closed(adapter: str) -> None:
    for backend in serve(adapter):
        with connect(backend) as sock:
            sock.sendall(GET)
            assert recv_until_closed(sock) == b""


def test_optional_header_direct_client_served(adapter: str) -> None:
    for backend in serve(adapter, required=False):
        with connect(backend) as sock:
            port = sock.getsockname()[1]
            sock.sendall(GET)
            data = recv_until_closed(sock)
        assert json.loads(data.partition(b"\r\n\r\n")[2])["client"] == ["127.0.0.1", port]


def test_header_timeout_closes(adapter: str) -> None:
    for backend in serve(adapter, timeout=0.5):
        with connect(backend) as sock:
            sock.sendall(b"PROXY TCP4 ")
            started = time.monotonic()
            assert recv_until_closed(sock, timeout=5) == b""
            assert 0.3 < time.monotonic() - started < 4
