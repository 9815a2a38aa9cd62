"""The README's "Deploying" examples, run as written: each proxy snippet is wrapped in the least
config its proxy needs to start (pid file, logs, modules), moved to free loopback ports, and put
in front of the ``tiercel`` command line that follows it in the README."""

from __future__ import annotations

import itertools
import os
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from edge_peers import CLIENT_ADDRESS, Proxy, Tiercel, client, seen
from processes import free_port
from support import require_peer

README = Path(__file__).parents[2] / "README.md"
PUBLIC_HOST = {"host": "example.com"}
TIERCEL_ADDRESS = "127.0.0.1:5000"


@dataclass
class Example:
    language: str  # nginx, haproxy or apache
    config: str
    command: str


def deploying_examples() -> list[Example]:
    text = README.read_text("utf-8")
    section = text.split("\n## Deploying\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```(\w+)\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    examples: list[Example] = []
    for (language, config), (next_language, command) in itertools.pairwise(blocks):
        if language != "sh":
            assert next_language == "sh", f"the {language} example has no command after it"
            examples.append(Example(language, config, command))
    return examples


def tiercel_for(example: Example) -> Tiercel:
    """The README's command line, with edge_app instead of myapp:app on a free port."""
    argv = shlex.split(example.command.replace("\\\n", " "))
    assert argv[:2] == ["tiercel", "myapp:app"], argv
    urls = argv.index("--urls")
    assert argv[urls + 1] == f"http://{TIERCEL_ADDRESS}", argv
    return Tiercel(*argv[2:urls], *argv[urls + 2 :])


def nginx(example: Example, tiercel: Tiercel, directory: Path, port: int) -> Proxy:
    binary = require_peer("nginx")
    snippet = example.config.replace("listen 80;", f"listen 127.0.0.1:{port};")
    temp_paths = "".join(
        f"{kind}_temp_path {directory}/{kind};\n" for kind in ("proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = directory / "nginx.conf"
    config.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"pid {directory}/nginx.pid;\nerror_log stderr info;\nevents {{}}\n"
        + f"http {{\naccess_log off;\nclient_body_temp_path {directory}/body;\n{temp_paths}"
        + snippet.replace(TIERCEL_ADDRESS, f"127.0.0.1:{tiercel.port}")
        + "}\n"
    )
    base = [binary, "-e", "stderr", "-p", str(directory), "-c", str(config)]
    return Proxy("nginx", [*base, "-g", "daemon off;"], [*base, "-t"], directory, [port])


def haproxy(example: Example, tiercel: Tiercel, directory: Path, port: int) -> Proxy:
    binary = require_peer("haproxy")
    snippet = example.config.replace("bind :80", f"bind 127.0.0.1:{port}")
    config = directory / "haproxy.cfg"
    config.write_text(
        "defaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n"
        "  timeout server 10s\n\n" + snippet.replace(TIERCEL_ADDRESS, f"127.0.0.1:{tiercel.port}")
    )
    return Proxy(
        "haproxy",
        [binary, "-f", str(config), "-db"],
        [binary, "-c", "-f", str(config)],
        directory,
        [port],
    )


def apache(example: Example, tiercel: Tiercel, directory: Path, port: int) -> Proxy:
    binary = require_peer("apache2")
    modules = "/usr/lib/apache2/modules"
    loads = "".join(
        f"LoadModule {name}_module {modules}/mod_{name}.so\n"
        for name in ("mpm_event", "authz_core", "proxy", "proxy_http", "proxy_http2")
    )
    config = directory / "httpd.conf"
    config.write_text(
        f"ServerRoot {directory}\nServerName localhost\nListen 127.0.0.1:{port}\n"
        f"PidFile {directory}/httpd.pid\nDefaultRuntimeDir {directory}\n"
        f"ErrorLog {directory}/error.log\n"
        + ("User nobody\nGroup nogroup\n" if os.geteuid() == 0 else "")
        + loads
        + example.config.replace(TIERCEL_ADDRESS, f"127.0.0.1:{tiercel.port}")
    )
    base = [binary, "-d", str(directory), "-f", str(config)]
    return Proxy("apache2", [*base, "-DFOREGROUND"], [*base, "-t"], directory, [port])


STARTERS: dict[str, Callable[[Example, Tiercel, Path, int], Proxy]] = {
    "nginx": nginx,
    "haproxy": haproxy,
    "apache": apache,
}
PEERS = {"nginx": "nginx", "haproxy": "haproxy", "apache": "apache2"}


def example_params() -> list[object]:
    return [
        pytest.param(
            example, marks=pytest.mark.peer(PEERS[example.language]), id=f"{i}-{example.language}"
        )
        for i, example in enumerate(deploying_examples())
    ]


def test_readme_has_the_promised_examples() -> None:
    languages = [example.language for example in deploying_examples()]
    assert languages.count("nginx") >= 1 and languages.count("haproxy") >= 1, languages
    assert "apache" in languages, languages


@pytest.fixture
def deployed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Example, int]]:
    example: Example = request.param
    port = free_port()
    with (
        tiercel_for(example) as tiercel,
        STARTERS[example.language](example, tiercel, tmp_path, port),
    ):
        yield example, port


@pytest.mark.parametrize("deployed", example_params(), indirect=True)
def test_example_works_as_written(deployed: tuple[Example, int]) -> None:
    example, port = deployed
    proxy_protocol = "--proxy-protocol" in example.command
    with client() as http:
        response = http.get(f"http://127.0.0.1:{port}/where", headers=PUBLIC_HOST)
        answer = seen(response)
        local_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
        refused = http.get(f"http://127.0.0.1:{port}/where", headers={"host": "evil.example"})
    # The PROXY header carries the client's port; X-Forwarded-For does not.
    assert answer["client"] == [CLIENT_ADDRESS, local_port if proxy_protocol else 0]
    assert answer["scheme"] == "http"
    assert answer["host"] == "example.com"
    assert answer["path"] == "/where"
    assert answer["http_version"] == (
        "2" if "proto h2" in example.config or "h2c://" in example.config else "1.1"
    )
    assert refused.status_code == 400
    if "X-Forwarded-Prefix" in example.config:
        prefix = re.search(r"X-Forwarded-Prefix (/\S+);", example.config)
        assert prefix is not None
        with client() as http:
            under = seen(http.get(f"http://127.0.0.1:{port}{prefix[1]}/items", headers=PUBLIC_HOST))
        assert under["root_path"] == prefix[1]
        assert under["path"] == f"{prefix[1]}/items"
        assert under["client"] == [CLIENT_ADDRESS, 0]
