"""Helpers for the socket tests: the real ``tiercel`` command (or a launcher in front of it, such
as systemd-socket-activate) as a subprocess in this folder, sockets to hand over, and addresses
for the raw HTTP/1.1 client in ``processes``."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from processes import Process, Processes

HERE = Path(__file__).parent

# The adapters, each with an app it can serve (the threads adapter runs WSGI apps only).
ADAPTER_APPS = {
    "asyncio": "sockets_apps:app",
    "trio": "sockets_apps:app",
    "threads": "sockets_apps:wsgi_app",
}


@pytest.fixture
def spawn(processes: Processes) -> Callable[..., Process]:
    """``spawn(argv, pass_fds=..., env=...)`` starts a process here; all stop after the test."""

    def start(
        argv: Sequence[str], *, pass_fds: Sequence[int] = (), env: dict[str, str] | None = None
    ) -> Process:
        return processes.add(Process(argv, cwd=HERE, pass_fds=pass_fds, env=env))

    return start


def one_error_line(process: Process, code: int) -> str:
    """The process ended with ``code`` and said why in exactly one ``tiercel: error`` line."""
    assert process.wait_exit() == code, process.lines
    errors = [line for line in process.lines if line.startswith("tiercel:")]
    assert len(errors) == 1, process.lines
    assert "Traceback" not in process.text, process.lines
    return errors[0]


def listening_socket(family: socket.AddressFamily = socket.AF_INET, address: object = None):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0) if address is None else address)
    sock.listen(16)
    return sock


def tcp(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def unix(path: str | Path) -> str:
    return f"unix:{path}"
