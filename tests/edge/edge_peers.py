"""Helpers for tests/edge: the real ``tiercel`` command serving ``edge_app``, a real reverse
proxy in front of it (started in the foreground from a config in a temporary directory and
stopped by its process id), and a client that connects from 127.0.0.2 so that the client's
address differs from the proxy's (127.0.0.1) on a single loopback interface."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import processes
from processes import free_port

HERE = Path(__file__).parent
CLIENT_ADDRESS = "127.0.0.2"
PROXY_ADDRESS = "127.0.0.1"


class Tiercel(processes.Tiercel):
    """``tiercel edge_app:app ARGS`` on a free port. It is ready when it accepts a connection
    (``--log-level warning`` hides the "listening on" line)."""

    def __init__(self, *args: str, app: str = "edge_app:app") -> None:
        self.port = free_port()
        super().__init__(app, "--urls", f"http://127.0.0.1:{self.port}", *args, cwd=HERE)
        try:
            self.wait_until_connectable("127.0.0.1", self.port)
        except BaseException:
            self.close()
            raise

    def close(self, grace: float = 5) -> None:
        super().close(grace)
        print(f"--- tiercel {' '.join(self.proc.args[1:])!s} ---\n{self.text}")  # shown on failure


class Proxy(processes.Process):
    """A reverse proxy in the foreground: its config is checked first (``check`` command), and it
    is ready when it accepts connections on every one of ``ports``."""

    def __init__(
        self,
        name: str,
        command: list[str],
        check: list[str],
        directory: Path,
        ports: list[int],
    ) -> None:
        self.name = name
        checked = subprocess.run(check, capture_output=True, text=True, timeout=30, check=False)
        if checked.returncode != 0:
            raise AssertionError(f"{name} refused its config:\n{checked.stdout}{checked.stderr}")
        super().__init__(command, cwd=directory, merge_stdout=True)
        try:
            for port in ports:
                self.wait_until_connectable(PROXY_ADDRESS, port)
        except BaseException:
            self.close()
            raise

    def close(self, grace: float = 5) -> None:
        super().close(grace)
        print(f"--- {self.name} ---\n{self.text}")  # pytest shows it when the test failed


def client(verify: ssl.SSLContext | bool = False) -> httpx.Client:
    """An HTTP/1.1 client whose connections come from ``CLIENT_ADDRESS``."""
    transport = httpx.HTTPTransport(local_address=CLIENT_ADDRESS, verify=verify)
    return httpx.Client(transport=transport, timeout=10)


def seen(response: httpx.Response) -> dict[str, Any]:
    """What the app saw, from its JSON answer (after checking that the app did answer)."""
    assert response.status_code == 200, (response.status_code, response.text[:500])
    result: dict[str, Any] = response.json()
    return result
