"""The real ``tiercel`` command with launch profiles, run as a subprocess in a project folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from processes import Processes, Tiercel, clean_env, free_port, run_tiercel

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


@pytest.fixture
def tiercel(tmp_path: Path, processes: Processes) -> Callable[..., Tiercel]:
    """``tiercel(*args, env=...)`` runs the command in the project folder ``tmp_path``."""

    def start(*args: str, env: dict[str, str] | None = None) -> Tiercel:
        return processes.add(Tiercel(*args, cwd=tmp_path, env=env))

    return start


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_tiercel(*args, cwd=cwd, timeout=30)


def write_app(directory: Path, name: str) -> None:
    """``NAME:app`` in ``directory``: it answers with its name first."""
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.py").write_text(APP.replace("{name}", name))


def one_profile(name: str, **fields: object) -> dict:
    """Launch settings with one ``Project`` profile that listens on the project's port."""
    profile = {"commandName": "Project", "applicationUrl": "http://127.0.0.1:PORT", **fields}
    return {"profiles": {name: profile}}


def project(tmp_path: Path, settings: dict | str, where: str = "Properties") -> int:
    """Two apps (``first:app``, ``second:app``) and a launch settings file; returns a port."""
    write_app(tmp_path, "first")
    write_app(tmp_path, "second")
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
    settings = one_profile(
        "sub", workingDirectory="site", commandLineArgs="inner:app --root-path '/my base'"
    )
    port = project(tmp_path, settings)
    write_app(tmp_path / "site", "inner")
    tiercel("--launch-profile", "SUB").url()
    answer = httpx.get(f"http://127.0.0.1:{port}/my%20base/cwd").text
    assert answer == f"inner {(tmp_path / 'site').resolve()}"


def test_pyproject_profile(tmp_path, tiercel):
    write_app(tmp_path, "first")
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
    port = project(tmp_path, one_profile("root", commandLineArgs="second:app"), where=".")
    server = tiercel()
    assert server.url() == f"http://127.0.0.1:{port}"
    assert server.lines[0] == "using launch profile 'root' from launchSettings.json"


def test_executable_profile_runs_the_program(tmp_path):
    script = (
        "import os, sys; print(os.environ['GREETING'], os.environ['TIERCEL_URLS'], sys.argv[1:])"
    )
    settings = one_profile(
        "script",
        commandName="Executable",
        executablePath=sys.executable,
        commandLineArgs=f'-c "{script}" from-profile',
        environmentVariables={"GREETING": "hello"},
    )
    project(tmp_path, settings)
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
    settings = one_profile(
        "workers",
        workingDirectory="site",
        commandLineArgs="inner:app --workers 2",
        environmentVariables={"GREETING": "x%GREETING%"},
    )
    port = project(tmp_path, settings)
    write_app(tmp_path / "site", "inner")
    server = tiercel(env=clean_env(GREETING="hi"))
    assert server.url() == f"http://127.0.0.1:{port}"
    server.wait_for(r"supervising 2 workers")
    for _ in range(4):  # new connections, spread over the workers
        # a worker that applied the profile once more would answer "xxhi"
        assert httpx.get(f"http://127.0.0.1:{port}/env/GREETING").text == "inner xhi"
    assert sum("using launch profile" in line for line in server.lines) == 1
