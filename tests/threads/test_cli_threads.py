"""The real ``tiercel`` command serving WSGI apps: ``--adapter threads``, ``--threads``, and
telling WSGI from ASGI on its own (``--interface auto``)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from processes import Processes, Tiercel, run_tiercel

APPS = Path(__file__).resolve().parent.parent / "wsgi"  # wsgi_apps.py lives there


@pytest.fixture
def tiercel(processes: Processes) -> Callable[..., Tiercel]:
    def start(*args: str, env: dict[str, str] | None = None) -> Tiercel:
        return processes.add(Tiercel(*args, cwd=APPS, env=env))

    return start


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
        assert process.stop(signal.SIGINT) == 0


def test_asgi_app_is_detected_and_refused_by_the_threads_adapter():
    result = run_tiercel("wsgi_apps:asgi_app", "--adapter", "threads", "--urls", LOCAL, cwd=APPS)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("tiercel: error: the threads adapter runs WSGI apps only")
    assert "--adapter asyncio" in result.stderr
    assert "Traceback" not in result.stderr


def test_interface_override(tiercel):
    process = tiercel("wsgi_apps:plain_app", "--interface", "wsgi", "--urls", LOCAL)
    url = process.url()
    process.wait_for(r"\(WSGI, asyncio adapter")
    assert httpx.get(url + "/forced").text == "hello /forced"
    assert process.stop(signal.SIGINT) == 0


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
