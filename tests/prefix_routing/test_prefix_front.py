"""``tiercel --apps FILE``: several apps on one port, as real processes on real sockets."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import require_peer

HERE = Path(__file__).parent


def tiercel_command() -> list[str]:
    path = shutil.which("tiercel")
    return [path] if path else [sys.executable, "-m", "tiercel.apps.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Front:
    """A running ``tiercel --apps`` process; its stderr is collected in the background."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*tiercel_command(), *args],
            cwd=HERE,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.raw = b""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        while chunk := self.proc.stderr.read1(65536):
            with self._changed:
                self.raw += chunk
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = re.search(pattern, self.text)
                if match:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not self._reader.is_alive() and self.proc.poll() is not None):
                    raise AssertionError(f"{pattern!r} not in stderr:\n{self.text}")
                self._changed.wait(min(remaining, 0.1))

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self._reader.join(5)


@pytest.fixture
def lifespan_log(tmp_path: Path) -> Path:
    return tmp_path / "lifespan.log"


@pytest.fixture
def front(tmp_path: Path, lifespan_log: Path) -> Iterator[Callable[..., Front]]:
    started: list[Front] = []

    def start(config: str, *args: str) -> Front:
        apps_file = tmp_path / "apps.toml"
        apps_file.write_text(config, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k != "TIERCEL_URLS"}
        env["PREFIX_TEST_LOG"] = str(lifespan_log)
        process = Front("--apps", str(apps_file), "--no-access-log", *args, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def three_apps(port: int) -> str:
    return f"""
[[app]]
name = "api"
prefixes = ["http://+:{port}/api/"]
app = "prefix_apps:api"

[[app]]
name = "site"
prefixes = ["http://*:{port}/"]
app = "prefix_apps:site"

[[app]]
name = "admin"
prefixes = ["http://admin.example:{port}/"]
app = "prefix_apps:admin"

[[app]]
name = "legacy"
prefixes = ["http://*:{port}/legacy/"]
app = "prefix_apps:legacy"
"""


def get(port: int, path: str, host: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"host": host} if host else {}
    return httpx.request(
        kwargs.pop("method", "GET"),
        f"http://127.0.0.1:{port}{path}",
        headers=headers,
        timeout=10,
        **kwargs,
    )


def test_three_apps_share_one_port(front: Callable[..., Front], lifespan_log: Path) -> None:
    port = free_port()
    process = front(three_apps(port))
    process.wait_for(r"listening on")
    assert "serving 4 apps from" in process.text
    cases = [
        # path, Host, app, root_path
        ("/api/items/1", None, "api", "/api"),
        ("/api", None, "api", "/api"),
        ("/API/Items", None, "api", "/API"),  # caseless; root_path in the request's spelling
        ("/apix", None, "site", ""),  # segment boundaries
        ("/", None, "site", ""),
        ("/about", "www.example", "site", ""),
        ("/about", "admin.example", "admin", ""),  # explicit host beats the weak wildcard
        ("/about", f"ADMIN.example:{port}", "admin", ""),
        ("/api/x", "admin.example", "api", "/api"),  # the strong wildcard beats explicit
    ]
    for path, host, app, root_path in cases:
        response = get(port, path, host)
        assert response.status_code == 200, (path, host, response.text)
        answer = response.json()
        assert answer["pid"] == process.proc.pid  # in-process
        assert (answer["app"], answer["root_path"], answer["path"]) == (app, root_path, path), (
            path,
            host,
        )
        # Each app sees the state its own lifespan startup made.
        assert answer["state"] == {"started_by": app}
    assert process.stop() == 0
    events = lifespan_log.read_text().splitlines()
    assert events == [
        "api startup",
        "site startup",
        "admin startup",
        "admin shutdown",
        "site shutdown",
        "api shutdown",
    ]


def test_wsgi_app_beside_asgi_apps(front: Callable[..., Front]) -> None:
    port = free_port()
    process = front(three_apps(port))
    process.wait_for(r"listening on")
    response = get(port, "/legacy/report/x", "legacy.example")
    assert response.json() == {
        "app": "legacy",
        "script_name": "/legacy",
        "path_info": "/report/x",
        "received": 0,
        "host": "legacy.example",
    }
    # The request body reaches wsgi.input as the app reads it, in full.
    body = os.urandom(3_000_000)
    response = get(port, "/Legacy/upload", method="POST", content=body)
    assert response.json()["received"] == len(body)
    assert response.json()["script_name"] == "/Legacy"
    # An ASGI app next to it is untouched.
    assert get(port, "/legacy-not/").json()["app"] == "site"


def test_wsgi_response_streams_in_blocks(front: Callable[..., Front]) -> None:
    port = free_port()
    config = f"""
[[app]]
prefixes = ["http://+:{port}/files/"]
app = "prefix_apps:legacy_stream"
"""
    process = front(config)
    process.wait_for(r"listening on")
    with httpx.stream("GET", f"http://127.0.0.1:{port}/files/big?300", timeout=30) as response:
        assert response.status_code == 200
        total = sum(len(block) for block in response.iter_bytes())
    assert total == 300 * 65536


def test_nothing_matches_is_404(front: Callable[..., Front]) -> None:
    port = free_port()
    config = f"""
[[app]]
prefixes = ["http://+:{port}/api/", "http://+:{port}/v2/api/"]
app = "prefix_apps:api"

[[app]]
prefixes = ["http://only.example:{port}/"]
app = "prefix_apps:admin"
"""
    process = front(config)
    process.wait_for(r"listening on")
    for path, host in [("/", None), ("/apix", None), ("/v2/", None), ("/x", "other.example")]:
        response = get(port, path, host)
        assert response.status_code == 404, (path, host)
        assert response.headers["content-type"].startswith("text/plain")
        assert "no app is registered for this URL" in response.text
    assert get(port, "/v2/api/x").json()["root_path"] == "/v2/api"
    assert get(port, "/x", "only.example").json()["app"] == "admin"


def test_ip_bound_prefix_binds_and_matches_its_address(front: Callable[..., Front]) -> None:
    port = free_port()
    config = f"""
[[app]]
name = "local"
prefixes = ["http://127.0.0.1:{port}/"]
app = "prefix_apps:site"

[[app]]
name = "api"
prefixes = ["http://+:{port}/api/"]
app = "prefix_apps:api"
"""
    process = front(config)
    # The bind list comes from the prefixes: a wildcard prefix binds every interface.
    process.wait_for(r"listening on")
    assert get(port, "/anything", "some.name").json()["app"] == "site"
    assert get(port, "/api/").json()["app"] == "api"


def test_ip_bound_only_binds_that_address(front: Callable[..., Front]) -> None:
    port = free_port()
    config = f"""
[[app]]
prefixes = ["http://127.0.0.1:{port}/"]
app = "prefix_apps:site"
"""
    process = front(config)
    assert process.wait_for(r"listening on (\S+)").group(1) == f"http://127.0.0.1:{port}"


def test_failing_startup_names_the_app_and_stops_the_others(
    front: Callable[..., Front], lifespan_log: Path
) -> None:
    port = free_port()
    config = f"""
[[app]]
name = "api"
prefixes = ["http://+:{port}/api/"]
app = "prefix_apps:api"

[[app]]
name = "billing"
prefixes = ["http://+:{port}/billing/"]
app = "prefix_apps:broken"

[[app]]
name = "site"
prefixes = ["http://+:{port}/"]
app = "prefix_apps:site"
"""
    process = front(config)
    assert process.proc.wait(20) == 1
    process.stop()
    assert re.search(r"tiercel: error: .*app 'billing'.*no database", process.text), process.text
    # The app started before it was shut down again; the one after it never started.
    assert lifespan_log.read_text().splitlines() == [
        "api startup",
        "broken startup failed",
        "api shutdown",
    ]


def test_explicit_urls_must_cover_every_prefix(front: Callable[..., Front]) -> None:
    port, other = free_port(), free_port()
    config = f"""
[[app]]
name = "api"
prefixes = ["http://+:{port}/api/", "http://+:{other}/api/"]
app = "prefix_apps:api"
"""
    process = front(config, "--urls", f"http://127.0.0.1:{port}")
    assert process.proc.wait(20) == 2
    process.stop()
    lines = [line for line in process.text.splitlines() if line.startswith("tiercel: error")]
    assert len(lines) == 1
    assert f"port {other}" in lines[0] and "--urls" in lines[0]


def test_explicit_urls_that_cover_the_prefixes(front: Callable[..., Front]) -> None:
    port = free_port()
    config = f"""
[[app]]
prefixes = ["http://+:{port}/api/"]
app = "prefix_apps:api"
"""
    process = front(config, "--urls", f"http://127.0.0.1:{port}")
    assert process.wait_for(r"listening on (\S+)").group(1) == f"http://127.0.0.1:{port}"
    assert get(port, "/api/x").json()["root_path"] == "/api"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            '[[app]]\nprefixes = ["http://+:8080api/"]\napp = "prefix_apps:api"\n',
            r"app #1 \('prefix_apps:api'\): invalid URL prefix 'http://\+:8080api/'",
        ),
        (
            '[[app]]\nprefixes = ["http://+:8080/"]\napp = "prefix_apps:api"\n'
            '[[app]]\nprefixes = ["http://+:8080/"]\napp = "prefix_apps:site"\n',
            "registered twice",
        ),
        ('[[app]]\napp = "prefix_apps:api"\n', "needs prefixes"),
        ('[[app]]\nprefixes = ["http://+:8080/"]\n', "needs app = 'module:attribute'"),
        (
            '[[app]]\nprefixes = ["http://+:8080/"]\napp = "prefix_apps:api"\nport = 1\n',
            "unknown key",
        ),
        ("[app]\nname = 1\n", r"must be a \[\[app\]\] table|no apps"),
        ("[[app]\n", "not valid TOML"),
        (
            '[[app]]\nprefixes = ["http://+:8080/"]\napp = "prefix_apps:nothing"\n',
            "has no attribute 'nothing'",
        ),
        (
            '[[app]]\nprefixes = ["http://+:8080/"]\napp = "prefix_apps:api"\ncommand = ["x"]\n',
            "either app = 'module:attribute' .* or command",
        ),
        (
            '[[app]]\nprefixes = ["http://+:8080/a/", "http://+:8080/b/"]\ncommand = ["x"]\n',
            "one path base",
        ),
        (
            '[[app]]\nprefixes = ["http://+:8080/"]\ncommand = ["x"]\nprocesses = 0\n',
            r"app #1 \('x'\): .*processes",
        ),
        ('[[app]]\nprefixes = ["http://+:8080/"]\ncommand = "tiercel app:app"\n', "list of words"),
    ],
)
def test_bad_config_is_one_clear_line(
    front: Callable[..., Front], config: str, message: str
) -> None:
    process = front(config)
    assert process.proc.wait(20) == 2
    process.stop()
    lines = process.text.strip().splitlines()
    assert len(lines) == 1, process.text
    assert lines[0].startswith("tiercel: error: ")
    assert re.search(message, lines[0]), lines[0]


def test_app_and_apps_together_is_refused(front: Callable[..., Front]) -> None:
    process = front('[[app]]\nprefixes = ["http://+:8080/"]\napp = "prefix_apps:api"\n', "x:y")
    assert process.proc.wait(20) == 2
    process.stop()
    assert "give either APP or --apps FILE, not both" in process.text


@pytest.mark.peer("curl")
def test_curl_reaches_each_app_by_host_and_path(front: Callable[..., Front]) -> None:
    curl = require_peer("curl")
    port = free_port()
    process = front(three_apps(port))
    process.wait_for(r"listening on")

    def fetch(path: str, host: str) -> str:
        result = subprocess.run(
            [curl, "-sS", "-H", f"Host: {host}", f"http://127.0.0.1:{port}{path}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return result.stdout

    assert '"app": "admin"' in fetch("/x", "admin.example")
    assert '"app": "site"' in fetch("/x", "www.example")
    assert '"root_path": "/api"' in fetch("/api/v1", "admin.example")


def test_out_of_process_app_beside_an_in_process_one(
    front: Callable[..., Front], lifespan_log: Path
) -> None:
    """A ``command`` entry runs behind ModuleProxy (tiercel module's forwarder) with its prefix's
    path base; the front stops its process on shutdown."""
    port = free_port()
    command = [sys.executable, "-m", "tiercel.apps.cli", "prefix_apps:admin", "--no-access-log"]
    words = ", ".join(f'"{word}"' for word in command)
    config = f"""
[[app]]
name = "api"
prefixes = ["http://+:{port}/api/"]
app = "prefix_apps:api"

[[app]]
name = "outside"
prefixes = ["http://+:{port}/outside/"]
command = [{words}]
startup_time_limit = 60
"""
    process = front(config)
    process.wait_for(r"listening on")
    inside = get(port, "/api/x").json()
    assert (inside["app"], inside["pid"]) == ("api", process.proc.pid)
    outside = get(port, "/outside/page", "www.example").json()
    assert (outside["app"], outside["root_path"], outside["path"]) == (
        "admin",
        "/outside",
        "/outside/page",
    )
    assert outside["pid"] != process.proc.pid
    assert get(port, "/Outside").json()["pid"] == outside["pid"]  # the same process again
    assert process.stop() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(outside["pid"], 0)
    assert lifespan_log.read_text().splitlines() == [
        "api startup",
        "admin startup",  # in the app process, on the first request
        "admin shutdown",
        "api shutdown",
    ]
