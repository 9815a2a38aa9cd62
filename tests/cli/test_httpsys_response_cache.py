"""``--response-cache`` with ``--adapter httpsys``: HTTP.sys replaces the engine the cache lives
in, so the option is refused up front (before httpapi.dll is loaded: no Windows needed) and the
error names HTTP.sys's own kernel cache option instead."""

from __future__ import annotations

from pathlib import Path

import pytest
from processes import run_tiercel
from tiercel.apps.options import ServerOptions
from tiercel.core.config import EngineConfig
from tiercel.core.errors import ConfigError
from tiercel.core.response_cache import ResponseCacheSettings

HERE = Path(__file__).parent


def test_command_refuses_it_in_one_line() -> None:
    result = run_tiercel(
        "--adapter", "httpsys", "--urls", "http://+:8080/", "--response-cache", "1MB", cwd=HERE
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--response-cache does not apply to --adapter httpsys" in lines[0]
    assert "--httpsys-no-response-cache" in lines[0]


def test_server_options_refuse_it() -> None:
    engine = EngineConfig(response_cache=ResponseCacheSettings(max_size=1 << 20))
    with pytest.raises(ConfigError, match=r"HTTP\.sys caches responses in the kernel"):
        ServerOptions(adapter="httpsys", urls="http://+:8080/", engine=engine)
    # Other adapters keep it.
    assert ServerOptions(adapter="asyncio", engine=engine).engine.response_cache is not None
