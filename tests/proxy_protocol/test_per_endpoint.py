"""The PROXY protocol on one endpoint only: a listen URL's ``?proxy=required|optional|off``
overrides ``--proxy-protocol`` for that endpoint. The real ``tiercel`` command serves two
endpoints at once; raw sockets send PROXY v2 headers and plain requests to each.

This module is also the app the command serves (``test_per_endpoint:asgi_app`` or
``:wsgi_app``): it answers with the client address it was given."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from pp_bytes import inet4, v2
from processes import Processes, Tiercel, clean_env, free_port, run_tiercel
from support import recv_until_closed

HERE = Path(__file__).parent
# The app is this module, which imports the tests' helpers: the command needs them on its path.
ENV = clean_env(PYTHONPATH=str(HERE.parent))
APPS = {
    "asyncio": "test_per_endpoint:asgi_app",
    "trio": "test_per_endpoint:asgi_app",
    "threads": "test_per_endpoint:wsgi_app",
}
PROXIED_CLIENT = "192.0.2.10"
HEADER = v2(addresses=inet4(PROXIED_CLIENT, 51000, "198.51.100.1", 443))
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    start = {"type": "http.response.start", "status": 200, "headers": []}
    await send(start)
    await send({"type": "http.response.body", "body": f"client {scope['client'][0]}".encode()})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("content-type", "text/plain")])
    return [f"client {environ['REMOTE_ADDR']}".encode()]


def exchange(port: int, data: bytes) -> bytes:
    """Sends ``data`` on a new connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        return recv_until_closed(sock)


def closed_without_answer(port: int, data: bytes) -> bool:
    """True when the server closes the connection without a byte; a server that keeps it open
    (waiting for more) raises TimeoutError and fails the test."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        try:
            return sock.recv(65536) == b""
        except ConnectionResetError:
            return True


def start(processes: Processes, adapter: str, urls: str, *args: str) -> Tiercel:
    server = processes.add(
        Tiercel(APPS[adapter], "--adapter", adapter, "--urls", urls, *args, cwd=HERE, env=ENV)
    )
    server.wait_for_lines(r"listening on ", urls.count(";") + 1)
    return server


@pytest.mark.parametrize("adapter", list(APPS))
def test_required_on_one_endpoint_only(processes: Processes, adapter: str) -> None:
    proxied, direct = free_port(), free_port()
    server = start(
        processes,
        adapter,
        f"http://127.0.0.1:{proxied}?proxy=required;http://127.0.0.1:{direct}",
    )
    server.wait_for(rf"listening on http://127\.0\.0\.1:{proxied} \(PROXY protocol required\)$")
    server.wait_for(rf"listening on http://127\.0\.0\.1:{direct}$")

    answer = exchange(proxied, HEADER + REQUEST)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    assert answer.endswith(f"client {PROXIED_CLIENT}".encode())
    assert closed_without_answer(proxied, REQUEST)  # no header where one is required

    # The other endpoint reads no header: the PROXY v2 signature is a malformed request there.
    refused = exchange(direct, HEADER + REQUEST)
    assert refused.startswith(b"HTTP/1.1 400 "), refused[:100]
    answer = exchange(direct, REQUEST)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    assert answer.endswith(b"client 127.0.0.1")


def test_url_turns_the_global_setting_off_or_optional(processes: Processes) -> None:
    plain, optional, proxied = free_port(), free_port(), free_port()
    urls = (
        f"http://127.0.0.1:{plain}?proxy=off;http://127.0.0.1:{optional}?proxy=optional;"
        f"http://127.0.0.1:{proxied}"
    )
    server = start(processes, "asyncio", urls, "--proxy-protocol", "required")
    server.wait_for(rf"listening on http://127\.0\.0\.1:{plain}$")
    server.wait_for(rf"listening on http://127\.0\.0\.1:{optional} \(PROXY protocol optional\)$")
    server.wait_for(rf"listening on http://127\.0\.0\.1:{proxied} \(PROXY protocol required\)$")

    assert exchange(plain, REQUEST).endswith(b"client 127.0.0.1")
    assert exchange(plain, HEADER + REQUEST).startswith(b"HTTP/1.1 400 ")
    assert exchange(optional, REQUEST).endswith(b"client 127.0.0.1")
    assert exchange(optional, HEADER + REQUEST).endswith(f"client {PROXIED_CLIENT}".encode())
    assert exchange(proxied, HEADER + REQUEST).endswith(f"client {PROXIED_CLIENT}".encode())
    assert closed_without_answer(proxied, REQUEST)


def test_proxy_trusted_applies_to_url_endpoints(processes: Processes) -> None:
    """Only 10.0.0.0/8 may send a header: the loopback client's header is refused."""
    port = free_port()
    start(
        processes,
        "asyncio",
        f"http://127.0.0.1:{port}?proxy=required",
        "--proxy-trusted",
        "10.0.0.0/8",
    )
    assert closed_without_answer(port, HEADER + REQUEST)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--urls", "http://127.0.0.1:8080?proxy=maybe"),
            "?proxy=maybe is not a PROXY protocol mode; write ?proxy=required, "
            "?proxy=optional or ?proxy=off",
        ),
        (
            ("--urls", "http://127.0.0.1:8080?proxy=required&proxy=off"),
            "option 'proxy' is given twice",
        ),
        (
            ("--urls", "http://127.0.0.1:8080?tls"),
            "unknown option 'tls'; an http:// URL takes only ?proxy=",
        ),
        (
            ("--urls", "queue:/tmp/tiercel-test.queue?proxy=required"),
            "a queue takes no ?proxy=",
        ),
        (
            ("--urls", "http://127.0.0.1:8080?proxy=off", "--proxy-trusted", "10.0.0.0/8"),
            "--proxy-trusted needs --proxy-protocol required|optional or a listen URL with "
            "?proxy=required|optional",
        ),
        (
            ("--urls", "http://127.0.0.1:8080?proxy=optional", "--proxy-trusted", "nonsense"),
            "'nonsense' is not a network",
        ),
    ],
)
def test_bad_settings_are_one_line_errors(args: tuple[str, ...], message: str) -> None:
    result = run_tiercel(APPS["asyncio"], *args, cwd=HERE, env=ENV)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
