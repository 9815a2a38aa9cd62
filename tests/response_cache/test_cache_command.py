"""``tiercel APP --response-cache SIZE``: the real command, a real client."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from processes import Processes, Tiercel, run_tiercel

HERE = Path(__file__).parent


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_the_command_serves_repeats_from_the_cache(processes: Processes, adapter: str) -> None:
    server = processes.add(
        Tiercel(
            "cli_cache_app:app",
            "--urls",
            "http://127.0.0.1:0",
            "--adapter",
            adapter,
            "--response-cache",
            "1MiB",
            cwd=HERE,
        )
    )
    with httpx.Client(base_url=server.url(timeout=20)) as client:
        first, second = client.get("/"), client.get("/")
    assert first.text == second.text == "call 1\n"
    assert "age" in second.headers


def test_a_bad_size_is_one_clear_line() -> None:
    result = run_tiercel("cli_cache_app:app", "--response-cache", "lots", cwd=HERE)
    assert result.returncode != 0
    assert "'lots' is not a size" in result.stderr
    assert "Traceback" not in result.stderr
