"""The real ``tiercel`` command with ``--workers``, run as a subprocess from this folder, and a
plain client that opens one connection per request (so every request meets the listen queue)."""

from __future__ import annotations

import ssl
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from processes import Tiercel, http_get, run_tiercel

HERE = Path(__file__).parent


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return run_tiercel(*args, cwd=HERE, timeout=timeout)


class WorkersTiercel(Tiercel):
    """``tiercel --workers N``: the supervisor, which says which workers it started."""

    def started(self) -> tuple[str, list[int]]:
        """Waits until every worker is ready: (the first listen address, the worker pids)."""
        pids = self.wait_for(r"supervising \d+ workers? \(pids? ([\d, ]+)\)").group(1)
        address = self.wait_for(r"listening on (\S+)").group(1)
        return address, [int(pid) for pid in pids.split(", ")]


def get(address: str, path: str = "/pid", timeout: float = 10, tls: ssl.SSLContext | None = None):
    """GET ``path`` on a new connection; (status, body). ``address`` is a listen URL."""
    return http_get(address, path, timeout=timeout, tls=tls)


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

    def wait_for_pids(self, count: int, timeout: float = 15) -> None:
        """Until answers have come from ``count`` different worker processes."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = len(self.pids)
            if seen >= count:
                return
            assert time.monotonic() < deadline, f"answers from only {seen}/{count} workers"
            time.sleep(0.01)

    def wait_served(self, more: int, timeout: float = 15) -> None:
        """Until ``more`` further requests have succeeded."""
        target = self.served + more
        deadline = time.monotonic() + timeout
        while self.served < target:
            assert time.monotonic() < deadline, f"only {self.served}/{target} served"
            time.sleep(0.01)
