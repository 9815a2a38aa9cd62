"""Fixtures for the WSGI tests: every test runs on the threads adapter and on the asyncio
adapter (which runs WSGI apps in a thread pool)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "threads"))

from support import RunningServer
from threads_harness import LogCollector, RunningThreadedServer
from wsgi_apps import FILE_BODY, STATE

ADAPTERS = ["threads", "asyncio"]


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def wsgi_serve(adapter: str) -> Iterator[Callable[..., Any]]:
    """``wsgi_serve(app, **Server kwargs)`` on the adapter under test."""
    servers: list[Any] = []

    def start(app: Any, **kwargs: Any) -> Any:
        if adapter == "threads":
            running: Any = RunningThreadedServer(app, **kwargs).start()
        else:
            kwargs.pop("threads", None)
            # The asyncio adapter lingers 2 s after closing a connection whose client closed
            # first (see the report); a short shutdown timeout keeps teardown quick.
            kwargs.setdefault("shutdown_timeout", 0.3)
            running = RunningServer(app, **kwargs).start()
        servers.append(running)
        return running

    yield start
    for running in servers:
        running.stop()


@pytest.fixture(autouse=True)
def fresh_state() -> None:
    STATE.reset()


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(FILE_BODY)
    return path


@pytest.fixture
def server_log() -> Iterator[LogCollector]:
    collector = LogCollector()
    root = logging.getLogger("tiercel")
    previous = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    yield collector
    root.removeHandler(collector)
    root.setLevel(previous)
