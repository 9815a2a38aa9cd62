"""Fixtures for the out-of-process module tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from module_harness import ModuleProcess


@pytest.fixture
def module(tmp_path: Path) -> Iterator[Callable[..., ModuleProcess]]:
    """``module(command, *options)`` runs `tiercel module`; everything is killed afterwards."""
    started: list[ModuleProcess] = []

    def start(command: list[str], *options: str) -> ModuleProcess:
        running = ModuleProcess(tmp_path, command, *options)
        started.append(running)
        return running

    yield start
    for running in started:
        running.kill_everything()
