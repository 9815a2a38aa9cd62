"""Fixtures for the trio adapter tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from trio_apps import STATE
from trio_harness import RunningTrioServer


@pytest.fixture
def trio_serve() -> Iterator[Callable[..., RunningTrioServer]]:
    """``trio_serve(app, **options)`` starts a trio server; all are stopped after the test."""
    servers: list[RunningTrioServer] = []

    def start(app: Any, **kwargs: Any) -> RunningTrioServer:
        running = RunningTrioServer(app, **kwargs).start()
        servers.append(running)
        return running

    yield start
    for running in servers:
        running.stop()


@pytest.fixture(autouse=True)
def fresh_state() -> None:
    STATE.reset()
