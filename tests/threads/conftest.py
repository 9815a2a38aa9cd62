"""Fixtures for the threaded adapter's tests."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from threads_harness import LogCollector, RunningThreadedServer
from tiercel.adapters.threads_adapter import epoll_available

PARKING = ["epoll", "selector"] if epoll_available() else ["selector"]


@pytest.fixture(params=PARKING)
def threads_serve(request: pytest.FixtureRequest) -> Iterator[Callable[..., RunningThreadedServer]]:
    """``threads_serve(app, threads=..., queue_limit=..., limits=...)`` starts a threaded
    server; all are stopped after the test. Each test runs once per way of parking idle
    connections: the shared epoll set (Linux) and the parker's selector (everywhere)."""
    servers: list[RunningThreadedServer] = []
    epoll = request.param == "epoll"

    def start(app: Any, **kwargs: Any) -> RunningThreadedServer:
        kwargs.setdefault("epoll", epoll)
        running = RunningThreadedServer(app, **kwargs).start()
        servers.append(running)
        return running

    yield start
    for running in servers:
        running.stop()


@pytest.fixture
def server_log() -> Iterator[LogCollector]:
    """Everything the ``tiercel`` loggers say during the test."""
    collector = LogCollector()
    root = logging.getLogger("tiercel")
    previous = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    yield collector
    root.removeHandler(collector)
    root.setLevel(previous)
