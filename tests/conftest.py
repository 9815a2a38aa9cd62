"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from processes import Processes
from support import RunningServer


@pytest.fixture
def serve() -> Iterator[Callable[..., RunningServer]]:
    """``serve(app, **Server kwargs)`` starts a server; all are stopped after the test."""
    servers: list[RunningServer] = []

    def start(app: Any, **kwargs: Any) -> RunningServer:
        running = RunningServer(app, **kwargs).start()
        servers.append(running)
        return running

    yield start
    for running in servers:
        running.stop()


@pytest.fixture
def processes() -> Iterator[Processes]:
    """``processes.add(Process(...))`` keeps a started program; all are closed after the test."""
    started = Processes()
    yield started
    started.close_all()
