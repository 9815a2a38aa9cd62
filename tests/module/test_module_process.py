"""`tiercel module` with real processes: start on first request, forwarding, the pairing token,
crashes and restarts, the start-up limit, rapid fails, streaming, and shutdown."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from module_harness import APP_COMMAND, pid_alive, wait_gone

ModuleFactory = Any


def test_first_request_starts_the_app_and_is_forwarded(module: ModuleFactory) -> None:
    front = module(APP_COMMAND, "--path-base", "/shop")
    time.sleep(0.3)
    assert front.app_pids() == [], "the app process must not start before the first request"
    seen = front.get_json("/shop/cart?item=1", headers={"X-Tiercel-Token": "forged"})
    assert front.app_pids() == [seen["pid"]]
    assert seen["root_path"] == "/shop"
    assert seen["path"] == "/shop/cart"
    assert seen["scheme"] == "http"
    assert seen["client"] == "127.0.0.1"
    headers = seen["headers"]
    assert "x-tiercel-token" not in headers  # the module's token is checked, then removed
    # The module's X-Forwarded-For/-Proto were applied by the app: the socket peer it replaced
    # (the module's own connection) is kept in x-original-for.
    assert headers["x-original-for"].startswith("127.0.0.1:")
    assert "x-forwarded-for" not in headers
    # Keep-alive: a second request reuses the same process.
    assert front.get_json("/shop/again")["pid"] == seen["pid"]


def test_client_address_and_scheme_reach_the_app_through_the_module(
    module: ModuleFactory,
) -> None:
    # The front itself believes a proxy on loopback, so the client it sees is 203.0.113.7 over
    # https; the module must pass exactly that on to the app.
    front = module(APP_COMMAND, "--forwarded-headers")
    seen = front.get_json(
        "/who", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    )
    assert seen["client"] == "203.0.113.7"
    assert seen["scheme"] == "https"


def _app_token(pid: int) -> str:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(v[len(b"TIERCEL_TOKEN=") :] for v in environ if v.startswith(b"TIERCEL_TOKEN="))


def _direct(port: int, extra: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /direct HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_the_app_port_refuses_requests_without_the_pairing_token(module: ModuleFactory) -> None:
    front = module(APP_COMMAND)
    seen = front.get_json("/env")
    port = int(seen["port"])
    assert _direct(port).startswith(b"HTTP/1.1 400 ")
    assert _direct(port, b"X-Tiercel-Token: wrong\r\n").startswith(b"HTTP/1.1 400 ")
    token = _app_token(seen["pid"]).decode()
    answer = _direct(port, f"X-Tiercel-Token: {token}\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    # Only loopback: the app did not bind any other address.
    listening = Path("/proc/net/tcp").read_text()
    assert f"0100007F:{port:04X}" in listening
    assert f"00000000:{port:04X}" not in listening


def test_a_killed_app_is_restarted_by_the_next_request(module: ModuleFactory) -> None:
    front = module(APP_COMMAND)
    first = front.get_json("/a")["pid"]
    os.kill(first, signal.SIGKILL)
    assert wait_gone(first)
    second = front.get_json("/b")["pid"]
    assert second != first
    assert front.app_pids() == [first, second]
    assert "exited with code -9" in front.text


def test_sigkill_under_load_fails_only_requests_in_flight(module: ModuleFactory) -> None:
    front = module(APP_COMMAND)
    first = front.get_json("/warm")["pid"]
    clients = 4
    results: list[tuple[float, str, int]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop(method: str) -> None:
        conn = front.connection(timeout=30)
        while not stop.is_set():
            try:
                conn.request(method, "/load", body=b"x" if method == "POST" else None)
                response = conn.getresponse()
                response.read()
                status = response.status
            except OSError:
                status = -1
                conn.close()
                conn = front.connection(timeout=30)
            with lock:
                results.append((time.monotonic(), method, status))
        conn.close()

    # GET may be retried by the module when the app dies under it; POST may not.
    methods = ["GET", "POST"] * (clients // 2)
    threads = [threading.Thread(target=client_loop, args=(m,)) for m in methods]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    killed_at = time.monotonic()
    os.kill(first, signal.SIGKILL)
    time.sleep(2.0)
    stop.set()
    for thread in threads:
        thread.join(30)
    failures = [(method, status) for _, method, status in results if status != 200]
    after = [status for at, _, status in results if at > killed_at + 1.0]
    counts = {m: sum(1 for _, method, _ in results if method == m) for m in ("GET", "POST")}
    print(
        f"\nSIGKILL under load: {counts['GET']} GET and {counts['POST']} POST requests from "
        f"{clients} keep-alive clients; failed: {failures}"
    )
    # Only requests in flight at the kill may fail, at most one per POST client; GETs that were
    # in flight are sent again to the new process.
    assert len(failures) <= clients // 2, failures
    assert all(method == "POST" for method, _ in failures), failures
    assert after and all(status == 200 for status in after)
    assert len(front.app_pids()) == 2


def test_an_app_that_never_listens_gets_a_502_naming_the_cause(module: ModuleFactory) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    front = module(sleeper, "--startup-time-limit", "1")
    status, body = front.request("GET", "/")
    assert status == 502
    assert b"did not listen on 127.0.0.1:" in body and b"within 1 s" in body
    (pid,) = front.app_pids()
    assert wait_gone(pid), "the process that never listened must be killed"


def test_an_app_that_keeps_exiting_is_not_restarted_after_rapid_fails(
    module: ModuleFactory,
) -> None:
    crasher = [sys.executable, "-c", "import sys; sys.exit(3)"]
    front = module(crasher)  # the default: more than 10 crashes within a minute
    for attempt in range(11):
        status, body = front.request("GET", f"/{attempt}")
        assert status == 502
        assert b"exited with code 3 before listening" in body
    for _ in range(3):
        status, body = front.request("GET", "/more")
        assert status == 502
        assert b"crashed 11 times within a minute" in body, body
        assert b"rapid_fails_per_minute (10)" in body
    assert len(front.app_pids()) == 11  # no start after the eleventh crash
    assert "not restarted for another" in front.text


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_1gb_response_streams_through_with_bounded_memory(module: ModuleFactory) -> None:
    front = module(APP_COMMAND)
    front.get_json("/warm")
    size = 1 << 30
    with socket.create_connection(("127.0.0.1", front.port), timeout=60) as sock:
        sock.sendall(b"GET /stream?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        head, _, body = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"content-length: %d" % size in head.lower()
        received = len(body)
        buffer = bytearray(1 << 20)
        while received < size:
            n = sock.recv_into(buffer)
            assert n, f"connection closed after {received} bytes"
            received += n
    assert received == size
    peak_mib = _vm_hwm_kib(front.pid) / 1024
    print(f"\n1 GiB through the module: module peak RSS {peak_mib:.0f} MiB")
    assert peak_mib < 150


def test_a_streamed_upload_passes_through(module: ModuleFactory) -> None:
    front = module(APP_COMMAND)
    digest = hashlib.sha256()
    piece = os.urandom(65536)

    def chunks() -> Any:
        for _ in range(160):  # 10 MiB, chunked: no Content-Length
            digest.update(piece)
            yield piece

    conn = front.connection()
    conn.request("POST", "/upload", body=chunks(), encode_chunked=True)
    response = conn.getresponse()
    seen = json.loads(response.read())
    conn.close()
    assert response.status == 200
    assert seen["body_length"] == 160 * 65536
    assert seen["body_sha256"] == digest.hexdigest()
    assert seen["headers"].get("transfer-encoding") == "chunked"


def test_module_shutdown_stops_the_app(module: ModuleFactory) -> None:
    front = module(APP_COMMAND)
    pid = front.get_json("/")["pid"]
    assert front.stop() == 0
    assert wait_gone(pid, 1.0), "the app process outlived the module"
    assert f"stopping app process {pid}" in front.text


def test_an_app_that_ignores_sigterm_is_killed_after_the_shutdown_limit(
    module: ModuleFactory, tmp_path: Path
) -> None:
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import os, signal, socket, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(os.environ['TIERCEL_PORT'])))\n"
        "s.listen()\n"
        "while True:\n"
        "    c, _ = s.accept(); c.recv(65536)\n"
        "    c.sendall(b'HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok'); c.close()\n"
    )
    front = module([sys.executable, str(script)], "--shutdown-time-limit", "1")
    status, body = front.request("GET", "/")
    assert (status, body) == (200, b"ok")
    (pid,) = front.app_pids()
    assert front.stop() == 0
    assert not pid_alive(pid)
    assert "did not stop within 1 s (shutdown_time_limit); killing it" in front.text


def test_stdout_log_file(module: ModuleFactory, tmp_path: Path) -> None:
    front = module(
        [*APP_COMMAND[:-2], "--log-level", "info"], "--stdout-log", str(tmp_path / "logs/app")
    )
    front.get_json("/")
    logs = list((tmp_path / "logs").glob("app_*.log"))
    assert len(logs) == 1
    assert "started by tiercel module" in logs[0].read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no app command"),
        (["myapp:app"], "tiercel module takes the app's command, not an APP"),
        (["--root-path", "/x", "--", "x"], "--root-path belongs to the app's command"),
        (["--rapid-fails-per-minute", "101", "--", "x"], "rapid_fails_per_minute must be"),
        (["--path-base", "shop/", "--", "x"], "path_base must start with '/'"),
        (["--adapter", "trio", "--", "x"], "tiercel module runs on the asyncio adapter"),
    ],
)
def test_module_configuration_errors(argv: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tiercel.apps.cli", "module", *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TIERCEL_PORT": "5000"}, "TIERCEL_TOKEN is not set"),
        ({"TIERCEL_PORT": "http", "TIERCEL_TOKEN": "t"}, "TIERCEL_PORT='http' is not a port"),
        ({"TIERCEL_PORT": "5000", "TIERCEL_TOKEN": "t", "TIERCEL_PATH_BASE": "x/"}, "root_path"),
    ],
)
def test_app_side_environment_errors(env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tiercel.apps.cli"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_app_killed_mid_response_gives_a_broken_response_not_a_short_one(
    module: ModuleFactory,
) -> None:
    front = module(APP_COMMAND)
    pid = front.get_json("/warm")["pid"]
    size = 1 << 30
    with socket.create_connection(("127.0.0.1", front.port), timeout=30) as sock:
        sock.sendall(b"GET /stream?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        received = len(sock.recv(65536))
        os.kill(pid, signal.SIGKILL)
        while data := sock.recv(1 << 20):
            received += len(data)
    assert received < size  # the connection was closed before the announced length
    assert front.get_json("/after")["pid"] != pid
    assert "Traceback" not in front.text


def _wait_for_file(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(("size", "released_early"), [(900_000, True), (64 * 1_048_576, False)])
def test_a_slow_client_does_not_hold_the_app(
    module: ModuleFactory, tmp_path: Path, size: int, released_early: bool
) -> None:
    """A small response is finished on the app's side while the client reads nothing (the
    module's 1 MiB read-ahead plus the socket buffers take it); a large one is held back by
    back-pressure, because the module never buffers a response whole."""
    front = module(APP_COMMAND)
    front.get_json("/warm")
    marker = tmp_path / f"done-{size}"
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads slowly
        sock.settimeout(30)
        sock.connect(("127.0.0.1", front.port))
        sock.sendall(
            b"GET /stream?size=%d&marker=%b HTTP/1.1\r\nHost: x\r\n\r\n" % (size, bytes(marker))
        )
        assert _wait_for_file(marker, 3.0) is released_early
        received = 0
        while b"\r\n\r\n" not in (head := sock.recv(4096, socket.MSG_PEEK)):
            time.sleep(0.01)
        received -= head.index(b"\r\n\r\n") + 4
        while received < size:
            data = sock.recv(1 << 20)
            assert data
            received += len(data)
    assert received == size
    assert _wait_for_file(marker, 10.0)


def test_concurrent_first_requests_share_one_start(module: ModuleFactory) -> None:
    front = module(APP_COMMAND)
    pids: list[int] = []

    def fetch() -> None:
        pids.append(front.get_json("/first")["pid"])

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(pids) == 6
    assert len(set(pids)) == 1
    assert front.app_pids() == pids[:1]


def test_processes_are_used_round_robin(module: ModuleFactory) -> None:
    front = module(APP_COMMAND, "--processes", "2")
    pids = [front.get_json(f"/{i}")["pid"] for i in range(4)]
    assert pids[0] != pids[1]
    assert pids[2:] == pids[:2]
    assert sorted(front.app_pids()) == sorted(set(pids))


def test_an_app_silent_past_the_request_timeout_gets_a_502(module: ModuleFactory) -> None:
    front = module(APP_COMMAND, "--request-timeout", "1")
    front.get_json("/warm")
    status, body = front.request("GET", "/sleep?seconds=5")
    assert status == 502
    assert b"did not answer within 1 s (request_timeout)" in body
    assert front.get_json("/after")["path"] == "/after"  # the app itself is fine
