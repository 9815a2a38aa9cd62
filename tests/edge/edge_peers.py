"""Helpers for tests/edge: the real ``tiercel`` command serving ``edge_app``, a real reverse
proxy in front of it (started in the foreground from a config in a temporary directory and
stopped by its process id), and a client that connects from 127.0.0.2 so that the client's
address differs from the proxy's (127.0.0.1) on a single loopback interface."""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).parent
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_PORT_CHOICE = random.SystemRandom()  # pytest-randomly reseeds the random module for each test
CLIENT_ADDRESS = "127.0.0.2"
PROXY_ADDRESS = "127.0.0.1"


def free_port() -> int:
    """A port that is free now, for a program that binds it later. It is drawn from below the
    kernel's ephemeral range, so the client side of some other connection cannot take it in the
    meantime (port 0 hands out ephemeral ports, which busy test runs reuse within seconds)."""
    ephemeral_low = 32768  # Linux's default, where the range cannot be read
    if EPHEMERAL_RANGE.exists():
        ephemeral_low = int(EPHEMERAL_RANGE.read_text().split()[0])
    for _ in range(200):
        port = _PORT_CHOICE.randrange(max(ephemeral_low // 2, 1024), ephemeral_low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


class Tiercel:
    """``tiercel edge_app:app ARGS`` as a subprocess on a free port; stderr is collected. It is
    ready when it accepts a connection (``--log-level warning`` hides the "listening on" line)."""

    def __init__(self, *args: str, app: str = "edge_app:app") -> None:
        path = shutil.which("tiercel")
        command = [path] if path else [sys.executable, "-m", "tiercel.apps.cli"]
        self.port = free_port()
        self.proc = subprocess.Popen(
            [*command, app, "--urls", f"http://127.0.0.1:{self.port}", *args],
            cwd=HERE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._raw = b""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise

    def _wait_until_serving(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise AssertionError(f"tiercel exited with {self.proc.returncode}:\n{self.log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"tiercel is not serving:\n{self.log}") from None
                time.sleep(0.05)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        while chunk := self.proc.stderr.read1(65536):
            with self._changed:
                self._raw += chunk
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def log(self) -> str:
        with self._changed:
            return self._raw.decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """The first stderr line matching the regular expression."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = re.search(pattern, self._raw.decode("utf-8", "replace"), re.MULTILINE)
                if match:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"{pattern!r} not in tiercel's stderr:\n{self.log}")
                self._changed.wait(min(remaining, 0.1))

    def __enter__(self) -> Tiercel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> str:
        """SIGTERM by process id; the whole stderr once it has exited."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)
        print(f"--- tiercel {' '.join(self.proc.args[1:])!s} ---\n{self.log}")  # shown on failure
        return self.log


class Proxy:
    """A reverse proxy in the foreground: its config is checked first (``check`` command), its
    output goes to ``proxy.log`` in ``directory``, and it is stopped by its process id."""

    def __init__(
        self,
        name: str,
        command: list[str],
        check: list[str],
        directory: Path,
        ports: list[int],
    ) -> None:
        self.name = name
        self.log_path = directory / "proxy.log"
        checked = subprocess.run(check, capture_output=True, text=True, timeout=30, check=False)
        if checked.returncode != 0:
            raise AssertionError(f"{name} refused its config:\n{checked.stdout}{checked.stderr}")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            for port in ports:
                self._wait_for_port(port)
        except BaseException:
            self.stop()
            raise

    def _wait_for_port(self, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log}")
            try:
                socket.create_connection((PROXY_ADDRESS, port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    message = f"{self.name} is not listening on {port}:\n{self.log}"
                    raise AssertionError(message) from None
                time.sleep(0.05)

    @property
    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        print(f"--- {self.name} ---\n{self.log}")  # pytest shows it when the test failed


def client(verify: ssl.SSLContext | bool = False) -> httpx.Client:
    """An HTTP/1.1 client whose connections come from ``CLIENT_ADDRESS``."""
    transport = httpx.HTTPTransport(local_address=CLIENT_ADDRESS, verify=verify)
    return httpx.Client(transport=transport, timeout=10)


def seen(response: httpx.Response) -> dict[str, Any]:
    """What the app saw, from its JSON answer (after checking that the app did answer)."""
    assert response.status_code == 200, (response.status_code, response.text[:500])
    result: dict[str, Any] = response.json()
    return result
