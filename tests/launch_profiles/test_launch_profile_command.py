"""The real ``tiercel`` command with launch profiles, run as a subprocess in a project folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

APP = '''\
import os


async def app(scope, receive, send):
    """GET /env/NAME answers os.environ[NAME]; GET /cwd the working directory."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path.startswith("/env/"):
        body = os.environ.get(path[5:], "<unset>")
    else:
        body = os.getcwd()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": (NAME + " " + body).encode()})


NAME = "{name}"
'''


def tiercel_command() -> list[str]:
    path = shutil.which("tiercel")
    return [path] if path else [sys.executable, "-m", "tiercel.apps.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TIERCEL_URLS", "TIERCEL_PORT")}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Tiercel:
    """A ``tiercel`` process in a project folder; stderr collected in the background."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*tiercel_command(), *args],
            cwd=cwd,
            env=env or clean_env(),
            stdout=subprocess.PIPE,
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
    def lines(self) -> list[str]:
        return self.raw.decode("utf-8", "replace").splitlines()

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if match := re.search(pattern, line):
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"{pattern!r} not in stderr: {self.lines}")
                self._changed.wait(min(remaining, 0.1))

    def url(self) -> str:
        return self.wait_for(r"listening on (http://\S+)").group(1)

    def stop(self) -> None:
        """SIGTERM by process id, SIGKILL if it does not go within 10 s."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._reader.join(5)


@pytest.fixture
def tiercel(tmp_path: Path) -> Iterator:
    started: list[Tiercel] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Tiercel:
        process = Tiercel(tmp_path, *args, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*tiercel_command(), *args],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def project(tmp_path: Path, settings: dict | str, where: str = "Properties") -> int:
    """Two apps (``first:app``, ``second:app``) and a launch settings file; returns a port."""
    (tmp_path / "first.py").write_text(APP.replace("{name}", "first"))
    (tmp_path / "second.py").write_text(APP.replace("{name}", "second"))
    port = free_port()
    text = settings if isinstance(settings, str) else json.dumps(settings, indent=2)
    path = tmp_path / where / "launchSettings.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text.replace("PORT", str(port)))
    return port


SETTINGS_JSONC = """\
{
  // Written by hand, the way Visual Studio writes them: comments and trailing commas.
  "profiles": {
    "IIS Express": { "commandName": "IISExpress", "launchBrowser": true },
    "Dev": {
      "commandName": "Project",
      "launchBrowser": true, /* ignored */
      "applicationUrl": "http://127.0.0.1:PORT",
      "commandLineArgs": "first:app --no-server-header",
      "environmentVariables": {
        "APP_ENV": "Development // not a comment",
        "HOME_COPY": "%HOME%",
        "UNKNOWN": "${NOT_SET_ANYWHERE}",
      },
    },
  },
}
"""


def test_default_profile_is_served(tmp_path, tiercel):
    port = project(tmp_path, SETTINGS_JSONC)
    server = tiercel()
    assert server.url() == f"http://127.0.0.1:{port}"
    assert server.lines[0] == "using launch profile 'Dev' from Properties/launchSettings.json"
    response = httpx.get(f"http://127.0.0.1:{port}/env/APP_ENV")
    assert response.text == "first Development // not a comment"
    assert "server" not in response.headers  # --no-server-header from commandLineArgs
    home = httpx.get(f"http://127.0.0.1:{port}/env/HOME_COPY").text
    assert home == "first " + os.environ["HOME"]
    unknown = httpx.get(f"http://127.0.0.1:{port}/env/UNKNOWN").text
    assert unknown == "first ${NOT_SET_ANYWHERE}"
    assert httpx.get(f"http://127.0.0.1:{port}/env/TIERCEL_LAUNCH_PROFILE").text == "first Dev"


def test_profile_variables_override_the_environment(tmp_path, tiercel):
    port = project(tmp_path, SETTINGS_JSONC)
    tiercel("--launch-profile", "dev", env=clean_env(APP_ENV="Production")).url()
    assert httpx.get(f"http://127.0.0.1:{port}/env/APP_ENV").text.startswith("first Develop")


def test_explicit_flags_win(tmp_path, tiercel):
    project(tmp_path, SETTINGS_JSONC)
    server = tiercel("second:app", "--urls", "http://127.0.0.1:0", env=clean_env())
    url = server.url()
    response = httpx.get(url + "/env/APP_ENV")
    assert response.text == "second Development // not a comment"  # the profile still applies
    assert "using launch profile 'Dev'" in server.lines[0]


def test_application_url_beats_tiercel_urls(tmp_path, tiercel):
    port = project(tmp_path, SETTINGS_JSONC)
    server = tiercel(env=clean_env(TIERCEL_URLS="http://127.0.0.1:0"))
    assert server.url() == f"http://127.0.0.1:{port}"


def test_no_launch_profile_skips_the_file(tmp_path, tiercel):
    project(tmp_path, SETTINGS_JSONC)
    server = tiercel("--no-launch-profile", "second:app", "--urls", "http://127.0.0.1:0")
    url = server.url()
    assert httpx.get(url + "/env/APP_ENV").text == "second <unset>"
    assert not any("launch profile" in line for line in server.lines)


def test_working_directory_and_argument_list(tmp_path, tiercel):
    port = project(
        tmp_path,
        {
            "profiles": {
                "sub": {
                    "commandName": "Project",
                    "applicationUrl": "http://127.0.0.1:PORT",
                    "workingDirectory": "site",
                    "commandLineArgs": "inner:app --root-path '/my base'",
                }
            }
        },
    )
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "inner.py").write_text(APP.replace("{name}", "inner"))
    tiercel("--launch-profile", "SUB").url()
    answer = httpx.get(f"http://127.0.0.1:{port}/my%20base/cwd").text
    assert answer == f"inner {(tmp_path / 'site').resolve()}"


def test_pyproject_profile(tmp_path, tiercel):
    (tmp_path / "first.py").write_text(APP.replace("{name}", "first"))
    port = free_port()
    (tmp_path / "pyproject.toml").write_text(
        f"""\
[project]
name = "demo"

[tool.tiercel.profiles.local]
applicationUrl = "http://127.0.0.1:{port}"
commandLineArgs = ["first:app"]
environmentVariables = {{ APP_ENV = "from toml, port $TEST_PORT" }}
"""
    )
    server = tiercel(env=clean_env(TEST_PORT=str(port)))
    assert server.url() == f"http://127.0.0.1:{port}"
    assert server.lines[0] == "using launch profile 'local' from pyproject.toml"
    answer = httpx.get(f"http://127.0.0.1:{port}/env/APP_ENV").text
    assert answer == f"first from toml, port {port}"


def test_launch_settings_in_the_project_root(tmp_path, tiercel):
    port = project(
        tmp_path,
        {
            "profiles": {
                "root": {
                    "commandName": "Project",
                    "applicationUrl": "http://127.0.0.1:PORT",
                    "commandLineArgs": "second:app",
                }
            }
        },
        where=".",
    )
    server = tiercel()
    assert server.url() == f"http://127.0.0.1:{port}"
    assert server.lines[0] == "using launch profile 'root' from launchSettings.json"


def test_executable_profile_runs_the_program(tmp_path):
    script = (
        "import os, sys; print(os.environ['GREETING'], os.environ['TIERCEL_URLS'], sys.argv[1:])"
    )
    project(
        tmp_path,
        {
            "profiles": {
                "script": {
                    "commandName": "Executable",
                    "executablePath": sys.executable,
                    "applicationUrl": "http://127.0.0.1:PORT",
                    "commandLineArgs": f'-c "{script}" from-profile',
                    "environmentVariables": {"GREETING": "hello"},
                }
            }
        },
    )
    result = run(tmp_path, "--launch-profile", "script", "--", "extra", "--urls")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        r"hello http://127\.0\.0\.1:\d+ \['from-profile', 'extra', '--urls'\]\n", result.stdout
    )
    assert "using launch profile 'script' from Properties/launchSettings.json" in result.stderr


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tiercel: error: ")
    return lines[0]


def test_unknown_profile(tmp_path):
    project(tmp_path, SETTINGS_JSONC)
    line = one_error_line(run(tmp_path, "--launch-profile", "staging"))
    assert "no launch profile named 'staging'" in line
    assert "'IIS Express' (IISExpress, not usable), 'Dev'" in line


def test_malformed_json(tmp_path):
    project(tmp_path, '{\n  "profiles": {\n    "a": {"commandName": "Project",,}\n  }\n}')
    line = one_error_line(run(tmp_path))
    assert line.startswith("tiercel: error: Properties/launchSettings.json:3:36: not valid JSON (")


def test_bad_argument_in_a_profile(tmp_path):
    project(
        tmp_path, {"profiles": {"p": {"commandName": "Project", "commandLineArgs": "--loop x"}}}
    )
    line = one_error_line(run(tmp_path))
    assert "launch profile 'p' in Properties/launchSettings.json: commandLineArgs" in line
    assert "--loop" in line


def test_workers_start_with_the_profile_applied_once(tmp_path, tiercel):
    port = project(
        tmp_path,
        {
            "profiles": {
                "workers": {
                    "commandName": "Project",
                    "applicationUrl": "http://127.0.0.1:PORT",
                    "workingDirectory": "site",
                    "commandLineArgs": "inner:app --workers 2",
                    "environmentVariables": {"GREETING": "x%GREETING%"},
                }
            }
        },
    )
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "inner.py").write_text(APP.replace("{name}", "inner"))
    server = tiercel(env=clean_env(GREETING="hi"))
    assert server.url() == f"http://127.0.0.1:{port}"
    server.wait_for(r"supervising 2 workers")
    for _ in range(4):  # new connections, spread over the workers
        # a worker that applied the profile once more would answer "xxhi"
        assert httpx.get(f"http://127.0.0.1:{port}/env/GREETING").text == "inner xhi"
    assert sum("using launch profile" in line for line in server.lines) == 1
