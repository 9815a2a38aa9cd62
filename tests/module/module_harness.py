"""Runs `tiercel module` as a real process for the tests and talks to it over real sockets."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
TIERCEL = [sys.executable, "-m", "tiercel.apps.cli"]
APP_COMMAND = [*TIERCEL, "module_apps:app", "--no-access-log", "--log-level", "warning"]


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


class ModuleProcess:
    """``tiercel module [options] -- command`` on a free loopback port; output in a file."""

    def __init__(self, tmp_path: Path, command: list[str], *options: str) -> None:
        self.log_path = tmp_path / "module.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
        env.pop("TIERCEL_PORT", None)
        env.pop("TIERCEL_TOKEN", None)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    *TIERCEL,
                    "module",
                    "--urls",
                    "http://127.0.0.1:0",
                    "--no-access-log",
                    *options,
                    "--",
                    *command,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=tmp_path,
            )
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log())
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                raise AssertionError(f"tiercel module exited early:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"tiercel module did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def app_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"started app process (\d+)", self.log())]

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def get_json(self, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        status, body = self.request("GET", path, headers=headers)
        assert status == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"tiercel module did not stop on SIGTERM:\n{self.log()}") from None

    def kill_everything(self) -> None:
        """After a test: nothing it started may survive it."""
        pids = self.app_pids()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
