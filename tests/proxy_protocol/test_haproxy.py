"""A real HAProxy in front of tiercel, sending PROXY v1 (``send-proxy``) and v2
(``send-proxy-v2`` with the CRC32C, authority and unique-id TLVs): the app sees the client
HAProxy accepted, not HAProxy itself."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pp_servers import Backend
from processes import Process, free_port
from support import recv_until_closed, require_peer

pytestmark = pytest.mark.peer("haproxy")


def start_haproxy(binary: str, config: Path, *ports: int) -> Process:
    """HAProxy in the foreground (``-db``), once it accepts connections on all ``ports``."""
    proxy = Process([binary, "-f", str(config), "-db"], cwd=config.parent)
    proxy.name = "haproxy"
    try:
        for port in ports:
            proxy.wait_until_connectable("127.0.0.1", port)
    except BaseException:
        proxy.close()
        raise
    return proxy


CONFIG = """\
global
  log stderr format raw local0 info
defaults
  mode http
  log global
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend fe_v1
  bind 127.0.0.1:{v1}
  default_backend be_v1
frontend fe_v2
  bind 127.0.0.1:{v2}
  unique-id-format %{{+X}}o\\ %ci:%cp_%fi:%fp_%Ts_%rt
  default_backend be_v2
backend be_v1
  http-reuse never
  server s1 127.0.0.1:{backend} send-proxy
backend be_v2
  http-reuse never
  server s1 127.0.0.1:{backend} send-proxy-v2 proxy-v2-options authority,unique-id,crc32c
"""


@pytest.fixture(scope="module", params=["asyncio", "trio", "threads"])
def haproxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, int, int]]:
    binary = require_peer("haproxy")
    server = Backend(request.param)
    ports = {"v1": free_port(), "v2": free_port(), "backend": server.port}
    config = Path(tmp_path_factory.mktemp("haproxy")) / "haproxy.cfg"
    config.write_text(CONFIG.format(**ports))
    subprocess.run([binary, "-c", "-f", str(config)], check=True, capture_output=True)
    try:
        with start_haproxy(binary, config, ports["v1"], ports["v2"]):
            yield ports["v1"], ports["v2"], server.port
    finally:
        server.stop()


def ask(port: int) -> tuple[dict[str, Any], int]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(b"GET / HTTP/1.1\r\nhost: example.test\r\nconnection: close\r\n\r\n")
        data = recv_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    result: dict[str, Any] = json.loads(body)
    return result, client_port


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_app_sees_the_client_haproxy_accepted(haproxy: tuple[int, int, int], version: str) -> None:
    v1, v2, _ = haproxy
    port = v1 if version == "v1" else v2
    for _ in range(3):
        seen, client_port = ask(port)
        assert seen["client"] == ["127.0.0.1", client_port]
        if seen["server"] is not None:  # WSGI's SERVER_NAME is the Host header's
            assert seen["server"] == ["127.0.0.1", port]


def test_direct_connection_without_header_is_closed(haproxy: tuple[int, int, int]) -> None:
    *_, backend = haproxy
    with socket.create_connection(("127.0.0.1", backend), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        assert recv_until_closed(sock, timeout=5) == b""


def test_captured_v2_header_has_checked_tlvs(tmp_path: Path) -> None:
    """The bytes HAProxy really sends, captured by a raw listener and parsed here."""
    from tiercel.core.proxy_protocol import (
        PP2_TYPE_CRC32C,
        ProxyHeader,
        ProxyProtocolReader,
    )

    binary = require_peer("haproxy")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(10)
        ports = {"v1": free_port(), "v2": free_port(), "backend": listener.getsockname()[1]}
        config = tmp_path / "haproxy.cfg"
        config.write_text(CONFIG.format(**ports))
        with (
            start_haproxy(binary, config, ports["v2"]),
            socket.create_connection(("127.0.0.1", ports["v2"]), timeout=5) as client,
        ):
            client.sendall(b"GET / HTTP/1.1\r\nhost: example.test\r\n\r\n")
            upstream, _ = listener.accept()
            with upstream:
                upstream.settimeout(5)
                reader = ProxyProtocolReader()
                result: object = None
                while not isinstance(result, ProxyHeader):
                    data = upstream.recv(65536)
                    assert data
                    result = reader.feed(data)
                assert result.version == 2
                assert result.source == ("127.0.0.1", client.getsockname()[1])
                assert PP2_TYPE_CRC32C in result.tlvs
                assert result.unique_id
                rest = reader.leftover
                while b"\r\n\r\n" not in rest:
                    rest += upstream.recv(65536)
                assert rest.startswith(b"GET / HTTP/1.1\r\n")
