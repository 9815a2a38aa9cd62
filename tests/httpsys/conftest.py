"""Fixtures: the Windows interpreter (Wine's on Linux, set up by .ci/wine-stage) and HTTP.sys
servers running in it, started and stopped by process id."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from httpsys_harness import ON_WINDOWS, ROOT, HttpSysProcess
from support import require_peer


@pytest.fixture(scope="session")
def windows_python() -> list[str]:
    """The command that starts the Windows interpreter with tiercel importable."""
    if ON_WINDOWS:
        return [sys.executable]
    wine = require_peer("wine")
    done = subprocess.run(
        [str(ROOT / ".ci" / "wine-stage")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f".ci/wine-stage failed:\n{done.stderr}", pytrace=False)
    return [wine, done.stdout.strip().splitlines()[-1]]


@pytest.fixture
def httpsys(windows_python: list[str]) -> Iterator[Callable[..., HttpSysProcess]]:
    """``httpsys(APP, *flags, path="/", base=None)`` starts a server and waits until it
    listens; ``base`` is ``scheme://host:port`` (default: a free http port on 127.0.0.1)."""
    started: list[HttpSysProcess] = []

    def start(
        app: str, *extra: str, path: str | tuple[str, ...] = "/", base: str | None = None
    ) -> HttpSysProcess:
        # One server at a time: Wine's wildcard routing confuses neighbouring ports.
        for earlier in started:
            earlier.kill()
        server = HttpSysProcess(windows_python, app, path, *extra, base=base)
        started.append(server)
        return server.wait_listening()

    yield start
    for server in started:
        server.kill()
    time.sleep(0.2)
