"""The real ``tiercel`` command, run as a subprocess from this folder."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from processes import Processes, Tiercel, clean_env, connect, free_port, http_get, run_tiercel
from support import recv_until_closed, require_peer

HERE = Path(__file__).parent


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 10):
    return run_tiercel(*args, cwd=HERE, env=env, timeout=timeout)


@pytest.fixture
def tiercel(processes: Processes) -> Callable[..., Tiercel]:
    def start(*args: str, env: dict[str, str] | None = None) -> Tiercel:
        return processes.add(Tiercel(*args, cwd=HERE, env=env))

    return start


@pytest.fixture
def socket_path() -> Iterator[str]:
    """A unix socket path short enough for AF_UNIX (pytest's tmp_path can be too long)."""
    directory = tempfile.mkdtemp(prefix="tiercel-", dir="/tmp")
    yield os.path.join(directory, "app.sock")
    shutil.rmtree(directory, ignore_errors=True)


def assert_one_error_line(result, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tiercel: error:")
    assert "Traceback" not in result.stderr
    return lines[0]


LOCAL = "http://127.0.0.1:0"


# -- information ---------------------------------------------------------------------------


def test_version():
    result = run("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"tiercel \d+\.\d+\.\d+\S*\n", result.stdout)


def test_help_has_examples():
    result = run("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert "tiercel myproject.main:app" in result.stdout
    assert "--factory" in result.stdout
    assert "--urls" in result.stdout
    assert "TIERCEL_URLS" in result.stdout


def test_module_fallback_runs_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "tiercel.apps.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("tiercel ")


# -- usage errors: exit 2, one line ---------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["--keep-alive-timeout", "soon"],
        ["--max-request-body-size", "-5"],
        ["--loop", "tokio"],
        ["a:b", "c:d"],
    ],
)
def test_bad_option(args):
    assert_one_error_line(run(*args), 2)


def test_app_that_cannot_be_imported():
    line = assert_one_error_line(run("no_such_module_xyz:app"), 2)
    assert "no_such_module_xyz" in line


def test_app_module_that_raises_on_import():
    line = assert_one_error_line(run("broken_on_import:app"), 2)
    assert "broken on purpose" in line


def test_app_module_with_a_missing_dependency():
    line = assert_one_error_line(run("missing_dependency:app"), 2)
    assert "tiercel_test_package_that_does_not_exist" in line


def test_app_without_colon():
    line = assert_one_error_line(run("noattr"), 2)
    assert "module:attribute" in line


def test_app_with_missing_attribute():
    line = assert_one_error_line(run("sample_apps:missing"), 2)
    assert "missing" in line


def test_app_that_is_not_callable():
    assert_one_error_line(run("sample_apps:not_an_app"), 2)


def test_factory_without_app():
    assert_one_error_line(run("--factory"), 2)


@pytest.mark.parametrize(
    "urls", ["ftp://x", "http://127.0.0.1:99999", "http://127.0.0.1:0/path", "unix:relative.sock"]
)
def test_bad_urls(urls):
    line = assert_one_error_line(run("sample_apps:app", "--urls", urls), 2)
    assert urls in line


@pytest.mark.parametrize("urls", ["http://[::1", "http://[zz]:80"])
def test_malformed_ipv6_urls(urls):
    # These made urlsplit raise a bare ValueError: a traceback and exit 1 (fixed in options.py).
    line = assert_one_error_line(run("sample_apps:app", "--urls", urls), 2)
    assert urls in line


def test_bad_tiercel_urls_env():
    result = run("sample_apps:app", env=clean_env(TIERCEL_URLS="ftp://x"))
    assert_one_error_line(result, 2)


# -- start-up errors: exit 1, one line ------------------------------------------------------


def test_address_already_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("sample_apps:app", "--urls", f"http://127.0.0.1:{port}")
    line = assert_one_error_line(result, 1)
    assert "already in use" in line
    assert str(port) in line


def test_lifespan_startup_failure():
    result = run("sample_apps:failing_startup", "--urls", LOCAL)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("tiercel: error:")
    assert "cannot reach the database" in last


def test_lifespan_on_with_an_app_without_lifespan():
    result = run("sample_apps:no_lifespan", "--urls", LOCAL, "--lifespan", "on")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("tiercel: error:")
    assert "only http" in result.stderr.splitlines()[-1]


def test_lifespan_auto_with_an_app_without_lifespan(tiercel):
    process = tiercel("sample_apps:no_lifespan", "--urls", LOCAL)
    assert httpx.get(process.url(), timeout=5).text == "no lifespan here"
    assert process.stop() == 0


def test_signal_during_a_startup_that_never_completes(tiercel):
    # Used to hang: the first signal only set the stop event and the second only aborted
    # connections, while start() waited for the app's startup forever (fixed in hosting.py).
    process = tiercel("sample_apps:hang_startup", "--urls", LOCAL)
    process.wait_for("startup is hanging")
    assert process.stop(signal.SIGTERM, timeout=5) == 0


def test_second_signal_ends_a_shutdown_that_never_completes(tiercel, socket_path):
    process = tiercel("sample_apps:hang_shutdown", "--urls", f"unix:{socket_path}")
    process.wait_for("listening on unix:")
    process.proc.send_signal(signal.SIGINT)
    process.wait_for("shutdown is hanging")
    assert process.stop(signal.SIGINT, timeout=5) == 0
    assert not os.path.exists(socket_path)


# -- serving --------------------------------------------------------------------------------


def test_welcome_app_without_app(tiercel):
    process = tiercel("--urls", LOCAL)
    url = process.url()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    assert not url.endswith(":0")
    process.wait_for("serving the built-in welcome app")
    with httpx.Client(base_url=url, timeout=5) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "tiercel is running" in page.text
        assert url in page.text
        data = client.get("/json")
        assert data.status_code == 200
        assert data.json() == {"message": "Hello, World!"}
    assert process.stop() == 0


def test_tiercel_urls_env(tiercel):
    port = free_port()
    process = tiercel("sample_apps:app", env=clean_env(TIERCEL_URLS=f"http://127.0.0.1:{port}"))
    assert process.url() == f"http://127.0.0.1:{port}"
    assert httpx.get(f"http://127.0.0.1:{port}/e", timeout=5).text == "hello /e root="


def test_urls_flag_wins_over_env(tiercel):
    port = free_port()
    process = tiercel(
        "sample_apps:app",
        "--urls",
        f"http://127.0.0.1:{port}",
        env=clean_env(TIERCEL_URLS="http://127.0.0.1:1"),
    )
    assert process.url() == f"http://127.0.0.1:{port}"


def test_port_zero_prints_the_real_port(tiercel):
    process = tiercel("sample_apps:app", "--urls", "http://127.0.0.1:0;http://127.0.0.1:0")
    process.wait_for("listening on")
    time.sleep(0.1)
    urls = re.findall(r"listening on (http://127\.0\.0\.1:(\d+))", "\n".join(process.lines))
    assert len(urls) == 2
    assert all(int(port) > 0 for _, port in urls)
    assert urls[0][1] != urls[1][1]
    for url, _ in urls:
        assert httpx.get(url + "/p", timeout=5).text == "hello /p root="


def test_ipv6_port_zero(tiercel):
    process = tiercel("sample_apps:app", "--urls", "http://[::1]:0")
    url = process.wait_for(r"listening on (http://\[::1\]:(\d+))$").group(1)
    assert httpx.get(url + "/six", timeout=5).text == "hello /six root="


@pytest.mark.peer("curl")
def test_unix_socket(tiercel, socket_path):
    curl = require_peer("curl")
    process = tiercel("sample_apps:app", "--urls", f"unix:{socket_path}")
    process.wait_for(f"listening on unix:{re.escape(socket_path)}")
    result = subprocess.run(
        [curl, "--silent", "--show-error", "--unix-socket", socket_path, "http://localhost/u"],
        capture_output=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello /u root="
    assert os.path.exists(socket_path)
    assert process.stop() == 0
    assert not os.path.exists(socket_path)


def test_stale_unix_socket_file_is_replaced(tiercel, socket_path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(socket_path)
    stale.close()  # the file stays behind, with nobody listening
    assert os.path.exists(socket_path)
    process = tiercel("sample_apps:app", "--urls", f"unix:{socket_path}")
    process.wait_for("listening on unix:")
    assert http_get(f"unix:{socket_path}", "/s") == (200, b"hello /s root=")
    assert process.stop() == 0
    assert not os.path.exists(socket_path)


def test_unix_socket_in_use_by_another_server(tiercel, socket_path):
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(socket_path)
    live.listen()
    result = run("sample_apps:app", "--urls", f"unix:{socket_path}")
    live.close()
    line = assert_one_error_line(result, 1)
    assert socket_path in line
    assert os.path.exists(socket_path)  # not ours to remove


def test_factory(tiercel):
    process = tiercel("sample_apps:create_app", "--factory", "--urls", LOCAL)
    assert httpx.get(process.url(), timeout=5).text == "made by the factory"


def test_root_path_and_limits_flags(tiercel):
    process = tiercel(
        "sample_apps:body_reader",
        "--urls",
        LOCAL,
        "--max-request-body-size",
        "10",
        "--no-server-header",
    )
    url = process.url()
    with httpx.Client(base_url=url, timeout=5) as client:
        small = client.post("/", content=b"0123456789")
        assert small.text == "10"
        assert "server" not in small.headers
        assert client.post("/", content=b"x" * 11).status_code == 413
    rooted = tiercel("sample_apps:app", "--urls", LOCAL, "--root-path", "/api")
    assert httpx.get(rooted.url() + "/api/x", timeout=5).text == "hello /api/x root=/api"


ACCESS_LINE = re.compile(
    r"^127\.0\.0\.1 - - \[\d\d/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/\d{4}:"
    r'\d\d:\d\d:\d\d \+0000\] "GET /x\?q=1 HTTP/1\.1" 200 (\d+)$'
)


def test_access_log_by_default(tiercel):
    process = tiercel("sample_apps:app", "--urls", LOCAL)
    response = httpx.get(process.url() + "/x?q=1", timeout=5)
    match = process.wait_for(ACCESS_LINE.pattern)
    assert int(match.group(2)) == len(response.content)


def test_no_access_log(tiercel):
    process = tiercel("sample_apps:app", "--urls", LOCAL, "--no-access-log")
    url = process.url()
    assert httpx.get(url + "/x?q=1", timeout=5).status_code == 200
    assert process.stop() == 0
    assert not any("GET /x" in line for line in process.lines)
    assert process.lines[-1] == "stopped"


def send_raw(url: str, request: bytes) -> bytes:
    with connect(url, timeout=5) as sock:
        sock.sendall(request)
        return recv_until_closed(sock)


def test_escape_bytes_in_the_target_are_escaped_in_the_logs(tiercel):
    process = tiercel("sample_apps:app", "--urls", LOCAL)
    url = process.url()
    data = send_raw(url, b"GET /\x1b[31mred HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    # The percent-encoded form is a normal request; its access line is printable as sent.
    assert httpx.get(url + "/%1b[31m", timeout=5).status_code == 200
    process.wait_for(r'"GET /%1b\[31m HTTP/1\.1" 200')
    process.wait_for(r"rejected 400 from 127\.0\.0\.1")
    assert process.stop() == 0
    assert b"\x1b" not in process.raw  # no raw escape byte reaches the terminal


def test_decoded_path_cannot_forge_error_log_lines(tiercel):
    # The adapter's error log used the percent-decoded path, so %1b and %0a reached stderr as
    # a raw escape and a forged line (fixed in adapters/asyncio_adapter.py).
    process = tiercel("sample_apps:crash", "--urls", LOCAL)
    url = process.url()
    target = b"/%1b[31mRED%0aFORGED%20line"
    data = send_raw(url, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    process.wait_for("answered 500")
    assert process.stop() == 0
    assert b"\x1b" not in process.raw
    assert not any(line.startswith("FORGED") for line in process.lines)
    assert any("exception in ASGI app" in line and "%1b" in line for line in process.lines)


def test_rejection_log_shows_the_escaped_target(tiercel):
    process = tiercel("sample_apps:app", "--urls", LOCAL)
    send_raw(process.url(), b"GET /\x1b[31mred HTTP/1.1\r\nHost: x\r\n\r\n")
    line = process.wait_for(r"rejected 400").string
    assert "\\x1b" in line
    assert "\x1b" not in line


def test_default_url_is_localhost_5000(tiercel):
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family) as probe:
                probe.bind((host, 5000))
        except OSError:
            pytest.skip(f"port 5000 on {host} is busy or unavailable here")
    process = tiercel("sample_apps:app")
    process.wait_for(r"listening on http://127\.0\.0\.1:5000$")
    process.wait_for(r"listening on http://\[::1\]:5000$")
    assert httpx.get("http://127.0.0.1:5000/d", timeout=5).text == "hello /d root="
    assert httpx.get("http://[::1]:5000/d", timeout=5).text == "hello /d root="
    assert process.stop() == 0
