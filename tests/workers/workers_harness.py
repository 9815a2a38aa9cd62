"""The real ``tiercel`` command with ``--workers``, run as a subprocess from this folder, and a
plain client that opens one connection per request (so every request meets the listen queue)."""

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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent


def tiercel_command() -> list[str]:
    path = shutil.which("tiercel")
    return [path] if path else [sys.executable, "-m", "tiercel.apps.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TIERCEL_URLS"}
    env.update(extra)
    return env


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tiercel_command(), *args],
        cwd=HERE,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Tiercel:
    """A running ``tiercel`` command; stderr is collected in the background."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()
    ) -> None:
        self.proc = subprocess.Popen(
            [*tiercel_command(), *args],
            cwd=HERE,
            env=env or clean_env(),
            pass_fds=pass_fds,
            stdin=subprocess.DEVNULL,
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

    def wait_for(self, pattern: str, timeout: float = 15, count: int = 1) -> list[re.Match[str]]:
        """The first ``count`` stderr lines matching the regular expression."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [m for m in map(re.compile(pattern).search, self.lines) if m]
                if len(found) >= count:
                    return found[:count]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"{pattern!r} (x{count}) not in stderr: {self.lines}")
                self._changed.wait(min(remaining, 0.1))

    def started(self) -> tuple[str, list[int]]:
        """Waits until every worker is ready: (the first listen address, the worker pids)."""
        pids = self.wait_for(r"supervising \d+ workers? \(pids? ([\d, ]+)\)")[0].group(1)
        address = self.wait_for(r"listening on (\S+)")[0].group(1)
        return address, [int(pid) for pid in pids.split(", ")]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self._reader.join(5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until_gone(pids: list[int], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while any(map(pid_alive, pids)):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if pid_alive(p)]}"
        time.sleep(0.05)


def get(address: str, path: str = "/pid", timeout: float = 10, tls: ssl.SSLContext | None = None):
    """GET ``path`` on a new connection; (status, body). ``address`` is a listen URL."""
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address[5:])
    else:
        host, port = address.split("://", 1)[1].rsplit(":", 1)
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="localhost")
    with sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        raise ConnectionError(f"no response: {data!r}")
    return int(head[9:12]), body


def worker_pid(address: str, path: str = "/pid", **kwargs) -> int:
    status, body = get(address, path, **kwargs)
    assert status == 200, (status, body)
    return int(body)


@dataclass
class ClientLoop:
    """``threads`` clients sending requests one after another until stopped; counts outcomes."""

    address: str
    threads: int = 1
    path: str = "/pid"
    pids: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _running: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> ClientLoop:
        for _ in range(self.threads):
            thread = threading.Thread(target=self._loop, daemon=True)
            thread.start()
            self._running.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._running:
            thread.join(15)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = get(self.address, self.path)
                outcome = int(body) if status == 200 else f"status {status}"
            except (OSError, ValueError) as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            with self._lock:
                if isinstance(outcome, int):
                    self.pids[outcome] += 1
                else:
                    self.failures.append(outcome)

    @property
    def served(self) -> int:
        with self._lock:
            return sum(self.pids.values())

    def wait_served(self, more: int, timeout: float = 15) -> None:
        """Until ``more`` further requests have succeeded."""
        target = self.served + more
        deadline = time.monotonic() + timeout
        while self.served < target:
            assert time.monotonic() < deadline, f"only {self.served}/{target} served"
            time.sleep(0.01)
