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

from processes import Process, clean_env, pid_alive

HERE = Path(__file__).parent
TIERCEL = [sys.executable, "-m", "tiercel.apps.cli"]
APP_COMMAND = [*TIERCEL, "module_apps:app", "--no-access-log", "--log-level", "warning"]


def wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


class ModuleProcess(Process):
    """``tiercel module [options] -- command`` on a free loopback port; stdout and stderr are
    collected together. It starts the app ``command`` as a child process of its own, so closing
    it also kills every app process it said it started."""

    name = "tiercel module"

    def __init__(self, tmp_path: Path, command: list[str], *options: str) -> None:
        env = clean_env(PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
        argv = [*TIERCEL, "module", "--urls", "http://127.0.0.1:0", "--no-access-log", *options]
        super().__init__([*argv, "--", *command], cwd=tmp_path, env=env, merge_stdout=True)
        try:
            address = self.wait_for(r"listening on http://127\.0\.0\.1:(\d+)", timeout=30)
        except BaseException:
            self.close()
            raise
        self.port = int(address.group(1))

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.proc

    def log(self) -> str:
        return self.text

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

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        return super().stop(sig, timeout)

    def close(self, grace: float = 5) -> None:
        """After a test: nothing it started may survive it."""
        pids = self.app_pids()
        super().close(grace)
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)

    kill_everything = close
