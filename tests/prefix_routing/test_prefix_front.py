"""``tiercel --apps FILE``: several apps on one port, as real processes on real sockets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from processes import Processes, Tiercel, clean_env, free_port
from support import require_peer

HERE = Path(__file__).parent


def entry(
    target: str | Sequence[str], *prefixes: str, name: str | None = None, **more: object
) -> str:
    """One ``[[app]]`` table: ``target`` is ``module:attribute`` or a command's list of words."""
    lines = ["[[app]]"]
    if name is not None:
        lines.append(f"name = {json.dumps(name)}")
    lines.append(f"prefixes = {json.dumps(list(prefixes))}")
    if isinstance(target, str):
        lines.append(f"app = {json.dumps(target)}")
    else:
        lines.append(f"command = {json.dumps(list(target))}")
    lines += [f"{key} = {json.dumps(value)}" for key, value in more.items()]
    return "\n".join(lines) + "\n\n"


def three_apps(port: int) -> str:
    return "".join(
        [
            entry("prefix_apps:api", f"http://+:{port}/api/", name="api"),
            entry("prefix_apps:site", f"http://*:{port}/", name="site"),
            entry("prefix_apps:admin", f"http://admin.example:{port}/", name="admin"),
            entry("prefix_apps:legacy", f"http://*:{port}/legacy/", name="legacy"),
        ]
    )


@pytest.fixture
def lifespan_log(tmp_path: Path) -> Path:
    return tmp_path / "lifespan.log"


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def front(tmp_path: Path, lifespan_log: Path, processes: Processes) -> Callable[..., Tiercel]:
    """``front(config, *args)``: ``tiercel --apps FILE`` with ``config`` in FILE."""

    def start(config: str, *args: str) -> Tiercel:
        apps_file = tmp_path / "apps.toml"
        apps_file.write_text(config, encoding="utf-8")
        env = clean_env(PREFIX_TEST_LOG=str(lifespan_log))
        command = ("--apps", str(apps_file), "--no-access-log", *args)
        return processes.add(Tiercel(*command, cwd=HERE, env=env))

    return start


@pytest.fixture
def serving(front: Callable[..., Tiercel]) -> Callable[..., Tiercel]:
    """``serving(config, *args)``: ``front`` once it listens."""

    def start(config: str, *args: str) -> Tiercel:
        process = front(config, *args)
        process.wait_for(r"listening on")
        return process

    return start


def refused(process: Tiercel, code: int) -> list[str]:
    """The ``tiercel: error`` lines of a front that exited with ``code`` at start-up."""
    assert process.wait_exit(20) == code, process.text
    return [line for line in process.lines if line.startswith("tiercel: error: ")]


def get(port: int, path: str, host: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"host": host} if host else {}
    return httpx.request(
        kwargs.pop("method", "GET"),
        f"http://127.0.0.1:{port}{path}",
        headers=headers,
        timeout=10,
        **kwargs,
    )


# -- serving ---------------------------------------------------------------------------------


def test_three_apps_share_one_port(
    serving: Callable[..., Tiercel], port: int, lifespan_log: Path
) -> None:
    process = serving(three_apps(port))
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
        assert answer["pid"] == process.pid  # in-process
        seen = (answer["app"], answer["root_path"], answer["path"])
        assert seen == (app, root_path, path), (path, host)
        # Each app sees the state its own lifespan startup made.
        assert answer["state"] == {"started_by": app}
    assert process.stop() == 0
    assert lifespan_log.read_text().splitlines() == [
        "api startup",
        "site startup",
        "admin startup",
        "admin shutdown",
        "site shutdown",
        "api shutdown",
    ]


def test_wsgi_app_beside_asgi_apps(serving: Callable[..., Tiercel], port: int) -> None:
    serving(three_apps(port))
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


def test_wsgi_response_streams_in_blocks(serving: Callable[..., Tiercel], port: int) -> None:
    serving(entry("prefix_apps:legacy_stream", f"http://+:{port}/files/"))
    with httpx.stream("GET", f"http://127.0.0.1:{port}/files/big?300", timeout=30) as response:
        assert response.status_code == 200
        total = sum(len(block) for block in response.iter_bytes())
    assert total == 300 * 65536


def test_nothing_matches_is_404(serving: Callable[..., Tiercel], port: int) -> None:
    serving(
        entry("prefix_apps:api", f"http://+:{port}/api/", f"http://+:{port}/v2/api/")
        + entry("prefix_apps:admin", f"http://only.example:{port}/")
    )
    for path, host in [("/", None), ("/apix", None), ("/v2/", None), ("/x", "other.example")]:
        response = get(port, path, host)
        assert response.status_code == 404, (path, host)
        assert response.headers["content-type"].startswith("text/plain")
        assert "no app is registered for this URL" in response.text
    assert get(port, "/v2/api/x").json()["root_path"] == "/v2/api"
    assert get(port, "/x", "only.example").json()["app"] == "admin"


def test_ip_bound_prefix_binds_and_matches_its_address(
    serving: Callable[..., Tiercel], port: int
) -> None:
    # The bind list comes from the prefixes: a wildcard prefix binds every interface.
    serving(
        entry("prefix_apps:site", f"http://127.0.0.1:{port}/", name="local")
        + entry("prefix_apps:api", f"http://+:{port}/api/", name="api")
    )
    assert get(port, "/anything", "some.name").json()["app"] == "site"
    assert get(port, "/api/").json()["app"] == "api"


def test_ip_bound_only_binds_that_address(front: Callable[..., Tiercel], port: int) -> None:
    process = front(entry("prefix_apps:site", f"http://127.0.0.1:{port}/"))
    assert process.wait_for(r"listening on (\S+)").group(1) == f"http://127.0.0.1:{port}"


def test_explicit_urls_that_cover_the_prefixes(front: Callable[..., Tiercel], port: int) -> None:
    config = entry("prefix_apps:api", f"http://+:{port}/api/")
    process = front(config, "--urls", f"http://127.0.0.1:{port}")
    assert process.wait_for(r"listening on (\S+)").group(1) == f"http://127.0.0.1:{port}"
    assert get(port, "/api/x").json()["root_path"] == "/api"


# -- start-up failures and bad configuration ----------------------------------------------


def test_failing_startup_names_the_app_and_stops_the_others(
    front: Callable[..., Tiercel], port: int, lifespan_log: Path
) -> None:
    process = front(
        entry("prefix_apps:api", f"http://+:{port}/api/", name="api")
        + entry("prefix_apps:broken", f"http://+:{port}/billing/", name="billing")
        + entry("prefix_apps:site", f"http://+:{port}/", name="site")
    )
    (line,) = refused(process, 1)
    assert re.search(r"tiercel: error: .*app 'billing'.*no database", line), process.text
    # The app started before it was shut down again; the one after it never started.
    assert lifespan_log.read_text().splitlines() == [
        "api startup",
        "broken startup failed",
        "api shutdown",
    ]


def test_explicit_urls_must_cover_every_prefix(front: Callable[..., Tiercel], port: int) -> None:
    other = free_port()
    config = entry("prefix_apps:api", f"http://+:{port}/api/", f"http://+:{other}/api/", name="api")
    process = front(config, "--urls", f"http://127.0.0.1:{port}")
    (line,) = refused(process, 2)
    assert f"port {other}" in line and "--urls" in line


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
    front: Callable[..., Tiercel], config: str, message: str
) -> None:
    process = front(config)
    (line,) = refused(process, 2)
    assert process.lines == [line], process.text  # nothing else is said
    assert re.search(message, line), line


def test_app_and_apps_together_is_refused(front: Callable[..., Tiercel]) -> None:
    process = front(entry("prefix_apps:api", "http://+:8080/"), "x:y")
    (line,) = refused(process, 2)
    assert "give either APP or --apps FILE, not both" in line


# -- real clients and apps in their own processes ------------------------------------------


@pytest.mark.peer("curl")
def test_curl_reaches_each_app_by_host_and_path(serving: Callable[..., Tiercel], port: int) -> None:
    curl = require_peer("curl")
    serving(three_apps(port))

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
    serving: Callable[..., Tiercel], port: int, lifespan_log: Path
) -> None:
    """A ``command`` entry runs behind ModuleProxy (tiercel module's forwarder) with its prefix's
    path base; the front stops its process on shutdown."""
    command = [sys.executable, "-m", "tiercel.apps.cli", "prefix_apps:admin", "--no-access-log"]
    process = serving(
        entry("prefix_apps:api", f"http://+:{port}/api/", name="api")
        + entry(command, f"http://+:{port}/outside/", name="outside", startup_time_limit=60)
    )
    inside = get(port, "/api/x").json()
    assert (inside["app"], inside["pid"]) == ("api", process.pid)
    outside = get(port, "/outside/page", "www.example").json()
    assert (outside["app"], outside["root_path"], outside["path"]) == (
        "admin",
        "/outside",
        "/outside/page",
    )
    assert outside["pid"] != process.pid
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
