"""The real ``tiercel`` command as a subprocess, and a small HTTP/1.1 client for any socket.

Every process is started here and stopped by its process id (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from support import recv_until_closed

HERE = Path(__file__).parent

# The adapters, each with an app it can serve (the threads adapter runs WSGI apps only).
ADAPTER_APPS = {
    "asyncio": "sockets_apps:app",
    "trio": "sockets_apps:app",
    "threads": "sockets_apps:wsgi_app",
}
_SYSTEMD_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def tiercel_command() -> list[str]:
    path = shutil.which("tiercel")
    return [path] if path else [sys.executable, "-m", "tiercel.apps.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without anything that would choose the listen URLs for tiercel."""
    drop = {"TIERCEL_URLS", *_SYSTEMD_VARIABLES}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


class Process:
    """A running process whose stderr is collected line by line in the background."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        pass_fds: Sequence[int] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.proc = subprocess.Popen(
            list(argv),
            cwd=HERE,
            env=env or clean_env(),
            pass_fds=tuple(pass_fds),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.raw = b""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        while True:
            chunk = self.proc.stderr.read1(65536)
            with self._changed:
                self.raw += chunk
                self._changed.notify_all()
            if not chunk:
                return

    @property
    def lines(self) -> list[str]:
        return self.raw.decode("utf-8", "replace").splitlines()

    def wait_for(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        """The first stderr line matching the regular expression."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    match = re.search(pattern, line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"{pattern!r} not in stderr: {self.lines}")
                self._changed.wait(min(remaining, 0.1))

    def wait_exit(self, timeout: float = 15) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM by process id, then wait for the graceful stop."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self._reader.join(5)


@pytest.fixture
def spawn() -> Iterator:
    """``spawn(argv, pass_fds=..., env=...)`` starts a process; all are killed after the test."""
    started: list[Process] = []

    def start(
        argv: Sequence[str], *, pass_fds: Sequence[int] = (), env: dict[str, str] | None = None
    ) -> Process:
        process = Process(argv, pass_fds=pass_fds, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def tiercel_argv(*args: str) -> list[str]:
    return [*tiercel_command(), *args]


def one_error_line(process: Process, code: int) -> str:
    """The process ended with ``code`` and said why in exactly one ``tiercel: error`` line."""
    assert process.wait_exit() == code, process.lines
    errors = [line for line in process.lines if line.startswith("tiercel:")]
    assert len(errors) == 1, process.lines
    assert "Traceback" not in process.raw.decode(), process.lines
    return errors[0]


def listening_socket(family: socket.AddressFamily = socket.AF_INET, address: object = None):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0) if address is None else address)
    sock.listen(16)
    return sock


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(
    connect: tuple[int, object],
    path: str,
    *,
    timeout: float = 10,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    """One ``GET`` with ``Connection: close`` over a new socket: (status, body)."""
    family, address = connect
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        response = recv_until_closed(sock, timeout)
    finally:
        sock.close()
    head, _, body = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        raise ConnectionError(f"no HTTP response, got {response[:80]!r}")
    return int(head.split()[1]), body


def http_get_with_retry(
    connect: tuple[int, object], path: str, *, timeout: float = 20
) -> tuple[int, bytes]:
    """``http_get`` until it works: for servers that start late (socket activation)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return http_get(connect, path, timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def tcp(port: int) -> tuple[int, object]:
    return (socket.AF_INET, ("127.0.0.1", port))


def unix(path: str | Path) -> tuple[int, object]:
    return (socket.AF_UNIX, str(path))
