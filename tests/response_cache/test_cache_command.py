"""``tiercel APP --response-cache SIZE``: the real command, a real client."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).parent


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tiercel.apps.cli", *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TIERCEL_URLS"}


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_the_command_serves_repeats_from_the_cache(adapter: str) -> None:
    proc = subprocess.Popen(
        _command(
            "cli_cache_app:app",
            "--urls",
            "http://127.0.0.1:0",
            "--adapter",
            adapter,
            "--response-cache",
            "1MiB",
        ),
        cwd=HERE,
        env=_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = None
        deadline = time.monotonic() + 20
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            match = re.search(r"listening on (http://\S+)", line)
            url = match.group(1) if match else None
        assert url is not None, "the server did not start"
        with httpx.Client(base_url=url) as client:
            first, second = client.get("/"), client.get("/")
        assert first.text == second.text == "call 1\n"
        assert "age" in second.headers
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_bad_size_is_one_clear_line() -> None:
    result = subprocess.run(
        _command("cli_cache_app:app", "--response-cache", "lots"),
        cwd=HERE,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode != 0
    assert "'lots' is not a size" in result.stderr
    assert "Traceback" not in result.stderr
