"""Start and stop: the lifespan, graceful shutdown with a request in flight, the shutdown
timeout, and the real ``tiercel --adapter trio`` command with its signals."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from processes import Processes, Tiercel, free_port
from support import recv_until_closed, write_certificate
from tiercel.apps.lifespan import LifespanFailed
from trio_apps import STATE, app, failing_startup
from trio_harness import RunningTrioServer, read_response

HERE = Path(__file__).parent


def wait_refused(port: int, timeout: float = 3) -> bool:
    """True once connecting to the port is refused (the listener is closed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            probe = socket.create_connection(("127.0.0.1", port), timeout=1)
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            pass
        else:
            probe.close()
        time.sleep(0.02)
    return False


def test_lifespan_startup_and_shutdown(trio_serve):
    server = trio_serve(app)
    assert STATE.lifespan == ["startup"]
    server.stop()
    assert STATE.lifespan == ["startup", "shutdown"]


def test_lifespan_startup_failure_raises_plainly():
    running = RunningTrioServer(failing_startup)
    with pytest.raises(LifespanFailed, match="no database"):
        running.start()


def test_graceful_stop_finishes_the_request_in_flight(trio_serve):
    server = trio_serve(app)
    idle = server.connect()
    idle.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(idle)[0].startswith(b"HTTP/1.1 200 OK")
    busy = server.connect()
    busy.sendall(b"GET /sleep?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert STATE.started.wait(5)
    began = time.monotonic()
    server.request_stop()
    assert wait_refused(server.port), "new connections are still accepted during shutdown"
    assert recv_until_closed(idle, timeout=2) == b""  # an idle keep-alive connection closes
    idle.close()  # (until the client closes too, the server lingers: see LINGER_SECONDS)
    data = recv_until_closed(busy, timeout=5)
    busy.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close" in head.lower()
    assert body == b"slept 1.0\n" + b"." * 10_000
    server.join(5)
    assert server.stopped
    assert 0.5 < time.monotonic() - began < 3
    assert STATE.lifespan == ["startup", "shutdown"]


def test_graceful_stop_of_http2_streams(trio_serve):
    """GOAWAY, then the stream in flight completes."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("needs curl")
    server = trio_serve(app)
    result: dict[str, subprocess.CompletedProcess[bytes]] = {}

    def fetch() -> None:
        result["curl"] = subprocess.run(
            [curl, "-sS", "--http2-prior-knowledge", f"{server.url}/sleep?s=0.5"],
            capture_output=True,
            timeout=10,
            check=False,
        )

    client = threading.Thread(target=fetch)
    client.start()
    assert STATE.started.wait(5)
    server.request_stop()
    client.join(10)
    assert result["curl"].stdout.startswith(b"slept 0.5\n"), result["curl"]
    server.join(5)
    assert server.stopped


def test_shutdown_timeout_aborts_an_app_that_never_finishes(trio_serve):
    server = trio_serve(app, shutdown_timeout=0.5)
    sock = server.connect()
    sock.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
    assert STATE.started.wait(5)
    began = time.monotonic()
    server.stop(timeout=5)
    assert 0.4 < time.monotonic() - began < 2.5
    assert recv_until_closed(sock, timeout=2) == b""  # no response at all
    assert STATE.cancelled.wait(2)


# -- the real command ---------------------------------------------------------------------------


@pytest.fixture
def tiercel(processes: Processes) -> Callable[..., Tiercel]:
    """``tiercel(*args)``: the command with ``--adapter trio``."""

    def start(*args: str) -> Tiercel:
        return processes.add(Tiercel(*args, "--adapter", "trio", cwd=HERE))

    return start


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_command_serves_and_stops_gracefully_on_signal(tiercel, sig):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = tiercel("trio_apps:app", "--urls", url)
    assert process.wait_for("listening on").string == f"listening on {url}"
    assert "trio adapter" in process.wait_for("serving trio_apps:app").string
    process.proc.send_signal(signal.SIGHUP)  # no https endpoint: nothing to reload, no harm
    assert httpx.get(f"{url}/hello", timeout=5).text == "GET /hello  0\n"
    result: dict = {}

    def slow_request() -> None:
        try:
            result["response"] = httpx.get(f"{url}/sleep?s=1", timeout=10)
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
    assert response.content == b"slept 1.0\n" + b"." * 10_000
    assert response.headers["connection"] == "close"
    assert process.proc.wait(10) == 0
    process.wait_for("stopped")


def test_command_second_signal_forces_the_stop(tiercel):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = tiercel("trio_apps:app", "--urls", url)
    process.wait_for("listening on")
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    began = time.monotonic()
    process.proc.send_signal(signal.SIGINT)
    process.wait_for("shutting down")
    process.proc.send_signal(signal.SIGINT)
    process.wait_for("forced shutdown")
    assert process.proc.wait(5) == 0
    assert time.monotonic() - began < 3  # not the 30 s shutdown timeout
    assert recv_until_closed(sock, timeout=2) == b""


def test_command_reports_a_failed_startup(tiercel):
    process = tiercel("trio_apps:failing_startup", "--urls", "http://127.0.0.1:0")
    assert process.proc.wait(10) == 1
    process.wait_for("tiercel: error: the app's startup failed: no database")


def test_command_serves_https_and_reloads_certificates_on_sighup(tiercel, tmp_path):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("needs curl")
    pems = write_certificate(tmp_path)
    port = free_port()
    process = tiercel(
        "trio_apps:app",
        "--urls",
        f"https://127.0.0.1:{port}",
        "--certfile",
        str(pems.cert),
        "--keyfile",
        str(pems.key),
    )
    process.wait_for("listening on")
    url = f"https://localhost:{port}/h2"
    result = subprocess.run(
        [curl, "-sS", "--cacert", str(pems.ca), "-w", "\n%{http_version}", url],
        capture_output=True,
        timeout=10,
        check=False,
    )
    assert result.stdout == b"GET /h2  0\n\n2", result
    process.proc.send_signal(signal.SIGHUP)
    process.wait_for("certificates reloaded")
    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(10) == 0
