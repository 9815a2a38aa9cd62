"""The real ``tiercel`` command serving WSGI apps: ``--adapter threads``, ``--threads``, and
telling WSGI from ASGI on its own (``--interface auto``)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

APPS = Path(__file__).resolve().parent.parent / "wsgi"  # wsgi_apps.py lives there


def command() -> list[str]:
    path = shutil.which("tiercel")
    return [path] if path else [sys.executable, "-m", "tiercel.apps.cli"]


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERCEL_")}
    env.update(extra)
    return env


class Tiercel:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*command(), *args],
            cwd=APPS,
            env=env or environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"{pattern!r} not in stderr: {self.lines}")

    def url(self) -> str:
        return self.wait_for(r"listening on (http://\S+)").group(1)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code


@pytest.fixture
def tiercel() -> Iterator:
    started: list[Tiercel] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Tiercel:
        process = Tiercel(*args, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
        process.proc.wait(5)


LOCAL = "http://127.0.0.1:0"


def test_flask_app_on_the_threads_adapter(tiercel):
    process = tiercel("wsgi_apps:flask_app", "--adapter", "threads", "--urls", LOCAL)
    url = process.url()
    process.wait_for(r"serving wsgi_apps:flask_app \(WSGI, threads adapter, \d+ worker threads\)")
    assert httpx.get(url + "/").text == "flask index"
    assert httpx.get(url + "/json").json() == {"ok": True, "args": {}}
    assert httpx.post(url + "/form", data={"name": "ann"}).text == "name=ann files=[]"
    assert httpx.get(url + "/nowhere").status_code == 404
    process.wait_for(r'"GET /json HTTP/1.1" 200')  # the access log
    assert process.stop(signal.SIGINT) == 0
    process.wait_for("shutting down")
    process.wait_for("^stopped$")


def test_threads_option_and_sigterm(tiercel):
    process = tiercel(
        "wsgi_apps:plain_app", "--adapter", "threads", "--threads", "3", "--urls", LOCAL
    )
    url = process.url()
    process.wait_for(r"\(WSGI, threads adapter, 3 worker threads\)")
    assert httpx.get(url + "/cli").text == "hello /cli"
    assert process.stop(signal.SIGTERM) == 0


def test_wsgi_apps_are_detected_on_the_default_adapter(tiercel):
    for app in ("wsgi_apps:flask_app", "wsgi_apps:plain_app"):
        process = tiercel(app, "--urls", LOCAL)
        url = process.url()
        process.wait_for(r"\(WSGI, asyncio adapter, \w+ loop\)")
        assert httpx.get(url + "/").status_code == 200
        assert process.stop() == 0


def test_asgi_app_is_detected_and_refused_by_the_threads_adapter():
    result = subprocess.run(
        [*command(), "wsgi_apps:asgi_app", "--adapter", "threads", "--urls", LOCAL],
        cwd=APPS,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("tiercel: error: the threads adapter runs WSGI apps only")
    assert "--adapter asyncio" in result.stderr
    assert "Traceback" not in result.stderr


def test_interface_override(tiercel):
    process = tiercel("wsgi_apps:plain_app", "--interface", "wsgi", "--urls", LOCAL)
    url = process.url()
    process.wait_for(r"\(WSGI, asyncio adapter")
    assert httpx.get(url + "/forced").text == "hello /forced"
    assert process.stop() == 0


def test_second_signal_forces_the_stop(tiercel):
    process = tiercel("wsgi_apps:plain_app", "--adapter", "threads", "--urls", LOCAL)
    url = process.url()
    outcome: list[object] = []

    def slow_request() -> None:
        try:
            outcome.append(httpx.get(url + "/slow?30", timeout=20))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    client = threading.Thread(target=slow_request, daemon=True)
    client.start()
    time.sleep(0.5)  # the request is in the app
    process.proc.send_signal(signal.SIGINT)
    process.wait_for("shutting down")
    started = time.monotonic()
    assert process.stop(signal.SIGINT) == 0
    assert time.monotonic() - started < 5
    process.wait_for(r"forced shutdown: aborting 1 connection\(s\)")
    client.join(5)
    assert isinstance(outcome[0], httpx.HTTPError)
