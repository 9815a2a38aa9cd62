"""Fixtures for the HTTP/2 attack tests: the app of h2apps.py served, and h2c clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from h2apps import AppState, make_app
from h2client import H2Client


@pytest.fixture
def state() -> AppState:
    return AppState()


@pytest.fixture
def h2server(serve: Callable[..., Any], state: AppState) -> Iterator[Any]:
    server = serve(make_app(state), lifespan="off", shutdown_timeout=3.0)
    yield server
    state.release.set()  # let blocked apps finish before the server stops


@pytest.fixture
def connect(h2server: Any) -> Iterator[Callable[..., H2Client]]:
    """``connect(**H2Client kwargs)``: a client to ``h2server``, closed after the test."""
    clients: list[H2Client] = []

    def open_client(**kwargs: Any) -> H2Client:
        client = H2Client(h2server.port, **kwargs)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()
