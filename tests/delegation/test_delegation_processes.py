"""Request delegation between real ``tiercel`` processes: a front on a TCP port hands
connections whose first request is under ``/api/`` to a receiver on ``queue:``, on every
adapter, with real clients (raw sockets, httpx, curl)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from processes import Processes, Tiercel, clean_env, run_tiercel
from support import require_peer
from tiercel.core.delegation import Handoff, encode_handoff

HERE = Path(__file__).parent
ADAPTERS = ("asyncio", "trio", "threads")
# The threads adapter serves WSGI apps only; the others get the ASGI twin of the same app.
INTERFACE = {"asyncio": "asgi", "trio": "asgi", "threads": "wsgi"}


@pytest.fixture
def queue_dir() -> Iterator[Path]:
    """A short directory for the queue socket (unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="tdlg-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_receiver(processes: Processes, adapter: str, queue: Path, *extra: str) -> Tiercel:
    app = f"delegation_apps:receiver_{INTERFACE[adapter]}"
    receiver = processes.add(
        Tiercel(app, "--adapter", adapter, "--urls", f"queue:{queue}", *extra, cwd=HERE)
    )
    receiver.wait_for(rf"listening on queue:{queue}")
    receiver.name = f"the receiver ({adapter})"
    return receiver


def start_front(
    processes: Processes, adapter: str, queue: Path, *extra: str
) -> tuple[Tiercel, int]:
    app = f"delegation_apps:front_{INTERFACE[adapter]}"
    front = processes.add(
        Tiercel(
            app,
            "--adapter",
            adapter,
            "--urls",
            "http://127.0.0.1:0",
            "--delegate",
            f"/api/={queue}",
            *extra,
            cwd=HERE,
        )
    )
    front.name = f"the front ({adapter})"
    url = front.url()
    front.wait_for(rf"delegating /api/ -> {queue}")
    return front, int(url.rsplit(":", 1)[1])


class RawClient:
    """One TCP connection to the front, reading responses framed by Content-Length."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.port = port
        self.local_port = self.sock.getsockname()[1]
        self._file = self.sock.makefile("rb")

    def request(self, method: str, path: str, body: bytes = b"") -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
        if body or method == "POST":
            head += f"Content-Length: {len(body)}\r\n"
        return (head + "\r\n").encode() + body

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        status_line = self._file.readline()
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        headers: dict[str, str] = {}
        while (line := self._file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = self._file.read(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    def json(self) -> dict[str, Any]:
        status, _, body = self.response()
        assert status == 200, body
        answer: dict[str, Any] = json.loads(body)
        return answer

    def close(self) -> None:
        self._file.close()
        self.sock.close()


def served_by(answer: dict[str, Any], process: Tiercel, role: str) -> None:
    assert (answer["role"], answer["pid"]) == (role, process.pid), answer


@pytest.mark.parametrize("receiver_adapter", ADAPTERS)
@pytest.mark.parametrize("front_adapter", ADAPTERS)
def test_connections_under_the_prefix_are_served_by_the_receiver(
    processes: Processes, queue_dir: Path, front_adapter: str, receiver_adapter: str
) -> None:
    queue = queue_dir / "api.queue"
    receiver = start_receiver(processes, receiver_adapter, queue)
    front, port = start_front(processes, front_adapter, queue)

    # The receiver answers, sees the path and Host the client sent and the client's own
    # address; a second request on the same (kept-alive) connection goes there too.
    client = RawClient(port)
    try:
        client.send(client.request("GET", "/api/items?x=1"))
        first = client.json()
        served_by(first, receiver, "receiver")
        assert first["path"] == "/api/items"
        assert first["host"] == f"127.0.0.1:{port}"
        assert first["client"] == ["127.0.0.1", client.local_port]
        client.send(client.request("GET", "/api/second"))
        second = client.json()
        served_by(second, receiver, "receiver")
        assert (second["path"], second["client"]) == ("/api/second", first["client"])
    finally:
        client.close()

    # Two pipelined requests in one write: the front read both; both reach the receiver.
    client = RawClient(port)
    try:
        client.send(client.request("GET", "/api/one") + client.request("GET", "/api/two"))
        answers = [client.json(), client.json()]
        assert [a["path"] for a in answers] == ["/api/one", "/api/two"]
        for answer in answers:
            served_by(answer, receiver, "receiver")
    finally:
        client.close()

    # A 200 KB POST whose body partly came with the head arrives whole.
    body = os.urandom(200_000)
    client = RawClient(port)
    try:
        message = client.request("POST", "/api/upload", body)
        head_end = message.index(b"\r\n\r\n") + 4
        client.send(message[: head_end + 50_000])
        time.sleep(0.2)
        client.send(message[head_end + 50_000 :])
        answer = client.json()
        served_by(answer, receiver, "receiver")
        assert answer["body_length"] == len(body)
        assert answer["body_sha256"] == hashlib.sha256(body).hexdigest()
    finally:
        client.close()

    # Everything else is the front's own, also with httpx.
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        served_by(http.get("/").json(), front, "front")
        served_by(http.get("/apix").json(), front, "front")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        response = http.post("/api/form", content=b"a=1&b=2")
        served_by(response.json(), receiver, "receiver")
        assert response.json()["body_length"] == 7


@pytest.mark.parametrize("front_adapter", ADAPTERS)
def test_while_the_receiver_is_down_the_front_answers_503_and_recovers(
    processes: Processes, queue_dir: Path, front_adapter: str
) -> None:
    queue = queue_dir / "api.queue"
    front, port = start_front(processes, front_adapter, queue)
    url = f"http://127.0.0.1:{port}/api/x"

    response = httpx.get(url, timeout=10)
    assert response.status_code == 503
    assert "no server is listening on the queue" in response.text
    assert f"--urls queue:{queue}" in response.text
    front.wait_for(r"rejected 503 .*delegation_failed")

    receiver = start_receiver(processes, front_adapter, queue)
    served_by(httpx.get(url, timeout=10).json(), receiver, "receiver")

    # The receiver restarts: the front's old queue connection is dead; it connects again.
    receiver.stop()
    assert httpx.get(url, timeout=10).status_code == 503
    restarted = start_receiver(processes, front_adapter, queue)
    served_by(httpx.get(url, timeout=10).json(), restarted, "receiver")
    served_by(httpx.get(url, timeout=10).json(), restarted, "receiver")
    served_by(httpx.get(f"http://127.0.0.1:{port}/", timeout=10).json(), front, "front")


@pytest.mark.parametrize("receiver_adapter", ADAPTERS)
def test_bad_packets_on_the_queue_are_dropped(
    processes: Processes, queue_dir: Path, receiver_adapter: str
) -> None:
    queue = queue_dir / "api.queue"
    receiver = start_receiver(processes, receiver_adapter, queue)
    good = encode_handoff(Handoff(b"", ("127.0.0.1", 1), None))
    read_end, write_end = os.pipe()
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sender:
        sender.connect(str(queue))
        sender.send(b"garbage")  # not a handoff
        sender.send(good)  # no socket with it
        socket.send_fds(sender, [good], [read_end])  # a pipe, not a socket
        socket.send_fds(sender, [good], [other.fileno()])  # a datagram socket
        socket.send_fds(sender, [b"garbage"], [write_end])  # a descriptor with garbage
        receiver.wait_for_lines(r"dropped a packet that is not a tiercel handoff", 5)
    for fd in (read_end, write_end):
        os.close(fd)
    other.close()
    # Still serving: a front delegates to it as usual.
    _, port = start_front(processes, "asyncio", queue)
    served_by(httpx.get(f"http://127.0.0.1:{port}/api/x", timeout=10).json(), receiver, "receiver")
    assert receiver.proc.poll() is None


def test_receiver_workers_share_the_queue(processes: Processes, queue_dir: Path) -> None:
    queue = queue_dir / "api.queue"
    receiver = start_receiver(processes, "asyncio", queue, "--workers", "2")
    pids = receiver.wait_for(r"supervising 2 workers \(pids (\d+), (\d+)\)").groups()
    worker_pids = {int(pid) for pid in pids}
    _, port = start_front(processes, "asyncio", queue)
    for _ in range(3):
        answer = httpx.get(f"http://127.0.0.1:{port}/api/x", timeout=10).json()
        assert answer["role"] == "receiver"
        assert answer["pid"] in worker_pids


def test_the_client_address_from_a_proxy_header_reaches_the_receiver(
    processes: Processes, queue_dir: Path
) -> None:
    queue = queue_dir / "api.queue"
    receiver = start_receiver(processes, "asyncio", queue)
    _, port = start_front(processes, "asyncio", queue, "--proxy-protocol", "required")
    client = RawClient(port)
    try:
        header = f"PROXY TCP4 203.0.113.7 127.0.0.1 51234 {port}\r\n".encode()
        client.send(header + client.request("GET", "/api/behind-a-proxy"))
        answer = client.json()
    finally:
        client.close()
    served_by(answer, receiver, "receiver")
    assert answer["client"] == ["203.0.113.7", 51234]
    assert answer["path"] == "/api/behind-a-proxy"


@pytest.mark.peer("curl")
def test_curl_uploads_through_the_front(processes: Processes, queue_dir: Path) -> None:
    curl = require_peer("curl")
    queue = queue_dir / "api.queue"
    receiver = start_receiver(processes, "trio", queue)
    _, port = start_front(processes, "asyncio", queue)
    body_file = queue_dir / "body.bin"
    body = os.urandom(200_000)
    body_file.write_bytes(body)
    result = subprocess.run(
        [curl, "-sS", "--data-binary", f"@{body_file}", f"http://127.0.0.1:{port}/api/upload"],
        capture_output=True,
        timeout=30,
        check=True,
    )
    answer = json.loads(result.stdout)
    served_by(answer, receiver, "receiver")
    assert answer["body_sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--delegate", "https://+:443/api/=/tmp/x.queue"], "only http:// prefixes"),
        (["--delegate", "/api/=x.queue"], "the queue must be an absolute unix socket path"),
        (["--delegate", "/api/"], "write it as URL_PREFIX=QUEUE_PATH"),
        (["--urls", "queue:x.queue"], "a queue needs an absolute path"),
    ],
)
def test_bad_delegation_settings_give_one_line(args: list[str], message: str) -> None:
    result = run_tiercel(*args, cwd=HERE, env=clean_env())
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_plain_asyncio_loops_hand_over_without_closing_the_connection(
    processes: Processes, queue_dir: Path
) -> None:
    """The default loop is uvloop when installed; asyncio's own transports must also let the
    socket go without a FIN (the keep-alive request proves the connection stayed open)."""
    queue = queue_dir / "api.queue"
    receiver = start_receiver(processes, "asyncio", queue, "--loop", "asyncio")
    _, port = start_front(processes, "asyncio", queue, "--loop", "asyncio")
    client = RawClient(port)
    try:
        for path in ("/api/first", "/api/second"):
            client.send(client.request("GET", path))
            answer = client.json()
            served_by(answer, receiver, "receiver")
            assert answer["path"] == path
    finally:
        client.close()
