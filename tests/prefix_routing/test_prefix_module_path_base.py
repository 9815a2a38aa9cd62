"""``tiercel --apps`` with an out-of-process (``command``) app beside an in-process one, as
real processes: both see the same root_path whatever the case of the request, the front's own
``--root-path`` and the X-Forwarded-Prefix the front believes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

HERE = Path(__file__).parent
TIERCEL = [sys.executable, "-m", "tiercel.apps.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Front:
    """``tiercel --apps FILE [ARGS]`` with an in-process app at /in/ and a command at /out/."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        command = ", ".join(f'"{word}"' for word in [*TIERCEL, "prefix_apps:admin"])
        config = tmp_path / "apps.toml"
        config.write_text(
            f"""
[[app]]
name = "inside"
prefixes = ["http://+:{self.port}/in/"]
app = "prefix_apps:api"

[[app]]
name = "outside"
prefixes = ["http://+:{self.port}/out/"]
command = [{command}, "--no-access-log"]
startup_time_limit = 60
""",
            encoding="utf-8",
        )
        self.log_path = tmp_path / "front.log"
        env = {k: v for k, v in os.environ.items() if k != "TIERCEL_URLS"}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*TIERCEL, "--apps", str(config), "--no-access-log", *args],
                cwd=HERE,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not re.search("listening on", self.log()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the front did not start:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **headers: str) -> dict[str, Any]:
        response = httpx.get(f"http://127.0.0.1:{self.port}{path}", headers=headers, timeout=60)
        assert response.status_code == 200, (response.text, self.log())
        answer: dict[str, Any] = response.json()
        return answer

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Callable[..., Front]]:
    started: list[Front] = []

    def start(*args: str) -> Front:
        running = Front(tmp_path, *args)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def seen(answer: dict[str, Any]) -> tuple[str, str, str]:
    return answer["app"], answer["root_path"], answer["path"]


def test_a_differently_cased_request_reaches_the_command_app_with_its_path_base(
    front: Callable[..., Front],
) -> None:
    running = front()
    assert seen(running.get("/OUT/abc")) == ("admin", "/OUT", "/OUT/abc")
    assert seen(running.get("/IN/abc")) == ("api", "/IN", "/IN/abc")
    # The app's own path base again inside the path is path, not base.
    assert seen(running.get("/out/OUT/x")) == ("admin", "/out", "/out/OUT/x")


def test_the_fronts_root_path_is_in_front_of_both_apps_path_bases(
    front: Callable[..., Front],
) -> None:
    running = front("--root-path", "/front")
    assert seen(running.get("/front/out/abc")) == ("admin", "/front/out", "/front/out/abc")
    assert seen(running.get("/front/in/abc")) == ("api", "/front/in", "/front/in/abc")
    assert seen(running.get("/Front/OUT/x%20y")) == ("admin", "/Front/OUT", "/Front/OUT/x y")
    assert seen(running.get("/front/out/out/x")) == ("admin", "/front/out", "/front/out/out/x")


def test_the_fronts_forwarded_prefix_is_in_front_of_both_apps_path_bases(
    front: Callable[..., Front],
) -> None:
    running = front("--forwarded-headers")
    edge = {"X-Forwarded-Prefix": "/edge"}
    assert seen(running.get("/out/abc", **edge)) == ("admin", "/edge/out", "/edge/out/abc")
    assert seen(running.get("/in/abc", **edge)) == ("api", "/edge/in", "/edge/in/abc")
    # Without the header the command app has its own path base only, in the same process.
    assert seen(running.get("/out/abc")) == ("admin", "/out", "/out/abc")
