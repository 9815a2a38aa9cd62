"""The socket side of delegation in one process: a socket sent with ``QueueSender`` arrives
through a real ``queue:`` socket as the same connection, and failures say why."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tiercel.adapters.delegation import DelegationFailed, QueueSender, take_handoff
from tiercel.adapters.sockets import bind_endpoints
from tiercel.core.addresses import parse_url
from tiercel.core.delegation import Handoff


@pytest.fixture
def queue_path() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="tdlg-", dir="/tmp"))
    yield directory / "q"
    shutil.rmtree(directory, ignore_errors=True)


def test_a_sent_socket_is_the_same_connection_on_the_other_side(queue_path: Path) -> None:
    [listener] = bind_endpoints([parse_url(f"queue:{queue_path}?mode=0600")])
    sender = QueueSender()
    client, front_side = socket.socketpair()
    try:
        assert listener.url == f"queue:{queue_path}"
        assert listener.is_queue
        assert queue_path.stat().st_mode & 0o777 == 0o600
        handoff = Handoff(b"GET / HTTP/1.1\r\n\r\n", ("192.0.2.1", 1234), ("127.0.0.1", 80))
        sender.send(str(queue_path), handoff, front_side.fileno())
        front_side.close()  # the front lets go; the connection stays open
        listener.sock.setblocking(True)
        conn, _ = listener.sock.accept()
        with conn:
            taken = take_handoff(conn)
        assert taken is not None
        received, moved = taken
        with moved:
            assert received == handoff
            moved.setblocking(True)
            client.sendall(b"more")
            assert moved.recv(4) == b"more"
            moved.sendall(b"answer")
            assert client.recv(6) == b"answer"
    finally:
        client.close()
        sender.close()
        listener.close()
    assert not queue_path.exists()  # the socket file goes with the listener


def test_no_receiver_is_a_failure_that_names_the_fix(queue_path: Path) -> None:
    sender = QueueSender()
    with socket.socket() as sock, pytest.raises(DelegationFailed) as failure:
        sender.send(str(queue_path), Handoff(b"", None, None), sock.fileno())
    assert str(failure.value) == (
        f"no server is listening on the queue {queue_path} "
        f"(start one with --urls queue:{queue_path})"
    )


def test_a_stale_socket_file_is_not_running(queue_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(str(queue_path))
    stale.close()  # bound, never listening: what a killed receiver leaves behind
    sender = QueueSender()
    with socket.socket() as sock, pytest.raises(DelegationFailed, match="is not running"):
        sender.send(str(queue_path), Handoff(b"", None, None), sock.fileno())
