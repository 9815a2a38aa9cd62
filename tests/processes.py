"""Programs the tests run as real processes: the ``tiercel`` command above all.

Theory of operation: a ``Process`` starts its command with stdout discarded (or merged into
stderr) and a daemon thread reading stderr as it comes, so a chatty program never blocks on a
full pipe and a test can wait for a line (``wait_for``) or for a port to accept connections
(``wait_until_connectable``). It is stopped by its process id: ``stop`` sends a signal and
expects the exit within a time limit (a program that hangs fails the test and is killed);
``close``, for clean-up after a test, sends SIGTERM, allows a grace period, then SIGKILL.
A suite with more needs (worker pids, child processes, a readiness probe) subclasses it.

Also here: the environment a test gives tiercel, a free loopback port for a program to bind
later, process-id checks, and a raw HTTP/1.1 ``GET`` over TCP, TLS or a unix socket."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

# Variables that would choose tiercel's settings or sockets behind the test's back.
_SYSTEMD_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_PORT_CHOICE = random.SystemRandom()  # pytest-randomly reseeds the random module for each test
_P = TypeVar("_P", bound="Process")


def tiercel_command() -> list[str]:
    """The installed ``tiercel`` script, or the module run by this Python."""
    path = shutil.which("tiercel")
    return [path] if path else [sys.executable, "-m", "tiercel.apps.cli"]


def tiercel_argv(*args: str) -> list[str]:
    return [*tiercel_command(), *args]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without TIERCEL_* or systemd socket variables, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TIERCEL_") and name not in _SYSTEMD_VARIABLES
    }
    env.update(extra)
    return env


def run_tiercel(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """``tiercel ARGS`` to completion; text stdout and stderr."""
    return subprocess.run(
        tiercel_argv(*args),
        cwd=cwd,
        env=dict(env) if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    """A loopback port that is free now, for a program that binds it later. It is drawn from below
    the kernel's ephemeral range, so the client side of some other connection cannot take it in
    the meantime (port 0 hands out ephemeral ports, which busy test runs reuse within seconds)."""
    ephemeral_low = 32768  # Linux's default, where the range cannot be read
    if _EPHEMERAL_RANGE.exists():
        ephemeral_low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    for _ in range(200):
        port = _PORT_CHOICE.randrange(max(ephemeral_low // 2, 1024), ephemeral_low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, it was read
        return False
    return "\nState:\tZ" not in status


def wait_until_gone(*pids: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while any(map(pid_alive, pids)):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if pid_alive(p)]}"
        time.sleep(0.05)


class Process:
    """A running program; its stderr (and stdout, with ``merge_stdout``) is collected."""

    name = "the process"

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        pass_fds: Sequence[int] = (),
        merge_stdout: bool = False,
    ) -> None:
        self.proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else clean_env(),
            pass_fds=tuple(pass_fds),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if merge_stdout else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if merge_stdout else subprocess.PIPE,
        )
        output = self.proc.stdout if merge_stdout else self.proc.stderr
        assert output is not None
        self._output = output
        self.raw = b""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := self._output.read1(65536):
            with self._changed:
                self.raw += chunk
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def text(self) -> str:
        with self._changed:
            return self.raw.decode("utf-8", "replace")

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def wait_for_lines(self, pattern: str, count: int, timeout: float = 15) -> list[re.Match[str]]:
        """The first ``count`` output lines matching the regular expression."""
        search = re.compile(pattern).search
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [match for match in map(search, self.lines) if match]
                if len(found) >= count:
                    return found[:count]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    raise AssertionError(
                        f"{pattern!r} (x{count}) not in the output of {self.name}:\n{self.text}"
                    )
                self._changed.wait(min(remaining, 0.1))

    def wait_for(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        """The first output line matching the regular expression."""
        return self.wait_for_lines(pattern, 1, timeout)[0]

    def wait_until_connectable(self, host: str, port: int, timeout: float = 15) -> None:
        """Until ``host:port`` accepts a connection; for programs that say nothing when ready."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self._reader.join(5)
                code = self.proc.returncode
                raise AssertionError(f"{self.name} exited with {code}:\n{self.text}")
            try:
                socket.create_connection((host, port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    message = f"{self.name} is not listening on {host}:{port}:\n{self.text}"
                    raise AssertionError(message) from None
                time.sleep(0.05)

    def wait_exit(self, timeout: float = 15) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Sends ``sig`` by process id and returns the exit code; a program that does not exit
        within ``timeout`` is killed and fails the test."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            return self.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            self._kill()
            raise AssertionError(
                f"{self.name} did not exit within {timeout} s of signal {sig}:\n{self.text}"
            ) from None

    def close(self, grace: float = 5) -> None:
        """After a test: SIGTERM, then SIGKILL if the program is still there after ``grace``."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._kill()
        self._reader.join(5)
        if not self._reader.is_alive():  # a child it left behind may still hold the pipe
            self._output.close()

    def _kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self._reader.join(5)

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Tiercel(Process):
    """``tiercel ARGS`` as a running process."""

    name = "tiercel"

    def __init__(
        self,
        *args: str,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        pass_fds: Sequence[int] = (),
        merge_stdout: bool = False,
    ) -> None:
        super().__init__(
            tiercel_argv(*args), cwd=cwd, env=env, pass_fds=pass_fds, merge_stdout=merge_stdout
        )

    def url(self, timeout: float = 15) -> str:
        """The first ``http://`` address it says it listens on."""
        return self.wait_for(r"listening on (http://\S+)", timeout).group(1)


class Processes:
    """The processes one test started; the ``processes`` fixture closes them all afterwards."""

    def __init__(self) -> None:
        self._started: list[Process] = []

    def add(self, process: _P) -> _P:
        self._started.append(process)
        return process

    def close_all(self) -> None:
        for process in reversed(self._started):
            process.close()


# -- a raw HTTP/1.1 client -----------------------------------------------------------------


def connect(address: str, timeout: float = 10) -> socket.socket:
    """A connected socket for a listen address: ``http(s)://HOST:PORT`` or ``unix:PATH``."""
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address.removeprefix("unix:"))
        except BaseException:
            sock.close()
            raise
        return sock
    host, port = address.split("://", 1)[-1].rsplit(":", 1)
    return socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)


def http_get(
    address: str,
    path: str = "/",
    *,
    timeout: float = 10,
    tls: ssl.SSLContext | None = None,
    server_hostname: str = "localhost",
) -> tuple[int, bytes]:
    """One ``GET`` with ``Connection: close`` on a new connection: (status, body). Every
    request meets the listen queue, which is what tests of sockets and workers want."""
    sock = connect(address, timeout)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname=server_hostname)
    with sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        )
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        raise ConnectionError(f"no HTTP response, got {response[:80]!r}")
    return int(head[9:12]), body


def http_get_with_retry(address: str, path: str = "/", *, timeout: float = 20) -> tuple[int, bytes]:
    """``http_get`` until it works: for servers that start listening late (socket activation)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return http_get(address, path, timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
