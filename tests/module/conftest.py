"""Fixtures for the out-of-process module tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from module_harness import ModuleProcess
from processes import Processes


@pytest.fixture
def module(tmp_path: Path, processes: Processes) -> Callable[..., ModuleProcess]:
    """``module(command, *options)`` runs `tiercel module`; everything is killed afterwards."""

    def start(command: list[str], *options: str) -> ModuleProcess:
        return processes.add(ModuleProcess(tmp_path, command, *options))

    return start
