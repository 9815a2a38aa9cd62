"""Start and stop: the lifespan, graceful shutdown with a request in flight, the shutdown
timeout, and the real ``tiercel --adapter trio`` command with its signals."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import trustme
from support import recv_until_closed
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


def tiercel_command() -> list[str]:
    path = shutil.which("tiercel")
    return [path] if path else [sys.executable, "-m", "tiercel.apps.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Tiercel:
    """A ``tiercel ... --adapter trio`` process; stderr is collected line by line."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "TIERCEL_URLS"}
        self.proc = subprocess.Popen(
            [*tiercel_command(), *args, "--adapter", "trio"],
            cwd=HERE,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"{text!r} not in stderr: {self.lines}")
                self._changed.wait(min(remaining, 0.1))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # by its process id, only if the test left it running
        self.proc.wait(5)
        self._reader.join(5)


@pytest.fixture
def tiercel():
    started: list[Tiercel] = []

    def start(*args: str) -> Tiercel:
        process = Tiercel(*args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_command_serves_and_stops_gracefully_on_signal(tiercel, sig):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = tiercel("trio_apps:app", "--urls", url)
    assert process.wait_for("listening on") == f"listening on {url}"
    assert "trio adapter" in process.wait_for("serving trio_apps:app")
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
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key, ca_pem = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_pem))
    port = free_port()
    process = tiercel(
        "trio_apps:app",
        "--urls",
        f"https://127.0.0.1:{port}",
        "--certfile",
        str(cert),
        "--keyfile",
        str(key),
    )
    process.wait_for("listening on")
    url = f"https://localhost:{port}/h2"
    result = subprocess.run(
        [curl, "-sS", "--cacert", str(ca_pem), "-w", "\n%{http_version}", url],
        capture_output=True,
        timeout=10,
        check=False,
    )
    assert result.stdout == b"GET /h2  0\n\n2", result
    process.proc.send_signal(signal.SIGHUP)
    process.wait_for("certificates reloaded")
    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(10) == 0
