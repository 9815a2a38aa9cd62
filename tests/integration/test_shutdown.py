"""Graceful shutdown: in process through ``Server.stop()``, and through the real ``tiercel``
command stopped by SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from processes import Processes, Tiercel, free_port
from support import recv_until_closed

HERE = Path(__file__).parent


def slow_app_factory(seconds: float):
    started = threading.Event()
    cancelled = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/slow":
            started.set()
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"finished " + b"x" * 50_000})

    return app, started, cancelled


def wait_refused(port: int, timeout: float = 3) -> bool:
    """True once connecting to the port is refused (the listener is closed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            probe = socket.create_connection(("127.0.0.1", port), timeout=1)
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            pass  # accepted by the backlog just as the listener closed; try again
        else:
            probe.close()
        time.sleep(0.02)
    return False


def test_graceful_stop_finishes_the_request_in_flight(serve):
    app, started, _ = slow_app_factory(1.0)
    server = serve(app)
    idle = server.connect()
    idle.sendall(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
    expected = len(b"finished ") + 50_000
    first = b""
    while len(first.partition(b"\r\n\r\n")[2]) < expected:
        first += idle.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 OK")
    sock = server.connect()
    sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert started.wait(5)
    began = time.monotonic()
    stopper = server.stop_in_background()
    assert wait_refused(server.port), "new connections are still accepted during shutdown"
    assert recv_until_closed(idle, timeout=2) == b""  # an idle keep-alive connection closes
    data = recv_until_closed(sock, timeout=5)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close" in head.lower()
    assert body == b"finished " + b"x" * 50_000
    stopper.join(5)
    assert not stopper.is_alive()
    assert time.monotonic() - began < 3


def test_shutdown_timeout_aborts_an_app_that_never_finishes(serve):
    app, started, cancelled = slow_app_factory(3600)
    server = serve(app, shutdown_timeout=0.5)
    sock = server.connect()
    sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert started.wait(5)
    began = time.monotonic()
    server.stop(timeout=5)
    elapsed = time.monotonic() - began
    assert 0.4 < elapsed < 2.5
    assert recv_until_closed(sock, timeout=2) == b""  # no response at all
    assert cancelled.wait(2)


# -- the real command ---------------------------------------------------------------------------


@pytest.fixture
def tiercel(processes: Processes) -> Callable[..., Tiercel]:
    def start(*args: str) -> Tiercel:
        return processes.add(Tiercel(*args, cwd=HERE))

    return start


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_command_stops_gracefully_on_signal(tiercel, sig):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = tiercel("shutdown_apps:slow", "--urls", url)
    assert process.wait_for("listening on").string == f"listening on {url}"
    result: dict = {}

    def slow_request() -> None:
        try:
            result["response"] = httpx.get(f"{url}/slow?s=1", timeout=10)
        except Exception as exc:  # pragma: no cover - reported by the assertions below
            result["error"] = exc

    client = threading.Thread(target=slow_request)
    client.start()
    process.wait_for("slow request started")
    process.proc.send_signal(sig)
    process.wait_for("shutting down")
    assert wait_refused(port), "new connections are still accepted during shutdown"
    client.join(10)
    assert "error" not in result, result
    response = result["response"]
    assert response.status_code == 200
    assert response.content == b"done /slow\n" + b"." * 10_000
    assert response.headers["connection"] == "close"
    assert process.proc.wait(10) == 0
    process.wait_for("stopped")


def test_command_second_signal_forces_the_stop(tiercel):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = tiercel("shutdown_apps:slow", "--urls", url, "--shutdown-timeout", "60")
    process.wait_for("listening on")
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /slow?s=60 HTTP/1.1\r\nHost: x\r\n\r\n")
    process.wait_for("slow request started")
    began = time.monotonic()
    process.proc.send_signal(signal.SIGTERM)
    process.wait_for("shutting down")
    process.proc.send_signal(signal.SIGTERM)
    process.wait_for("forced shutdown")
    assert process.proc.wait(5) == 0
    assert time.monotonic() - began < 5
    assert recv_until_closed(sock, timeout=2) == b""
