"""`tiercel module` as real processes: the path base matches caselessly, the front's own path
base reaches the app, the app dies with a SIGKILLed module, and 103 Early Hints pass through."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest
from module_harness import APP_COMMAND, TIERCEL, ModuleProcess, pid_alive, wait_gone
from support import recv_until_closed, require_peer

ModuleFactory = Callable[..., ModuleProcess]

EARLY_HINTS_COMMAND = [
    *TIERCEL,
    "gap_apps:early_hints",
    "--no-access-log",
    "--log-level",
    "warning",
]


def test_path_base_matches_in_any_case_and_keeps_the_requests_spelling(
    module: ModuleFactory,
) -> None:
    running = module(APP_COMMAND, "--path-base", "/out")
    seen = running.get_json("/OUT/abc")
    assert (seen["root_path"], seen["path"]) == ("/OUT", "/OUT/abc")
    seen = running.get_json("/out/abc")
    assert (seen["root_path"], seen["path"]) == ("/out", "/out/abc")
    seen = running.get_json("/outside")
    assert (seen["root_path"], seen["path"]) == ("", "/outside")


def test_a_clients_x_forwarded_prefix_does_not_reach_the_app(module: ModuleFactory) -> None:
    """The app believes X-Forwarded-Prefix from the module, so the module drops the client's."""
    running = module(APP_COMMAND, "--path-base", "/out")
    seen = running.get_json("/out/abc", headers={"X-Forwarded-Prefix": "/evil"})
    assert (seen["root_path"], seen["path"]) == ("/out", "/out/abc")
    assert "x-forwarded-prefix" not in seen["headers"]


def test_the_fronts_forwarded_prefix_goes_in_front_of_the_apps_path_base(
    module: ModuleFactory,
) -> None:
    """The front believes its proxy's X-Forwarded-Prefix (the proxy took /edge off the path);
    the app gets it in front of its own path base, as an in-process app would."""
    running = module(APP_COMMAND, "--path-base", "/shop", "--forwarded-headers")
    seen = running.get_json("/Shop/cart", headers={"X-Forwarded-Prefix": "/edge"})
    assert (seen["root_path"], seen["path"]) == ("/edge/Shop", "/edge/Shop/cart")
    seen = running.get_json("/elsewhere", headers={"X-Forwarded-Prefix": "/edge"})
    assert (seen["root_path"], seen["path"]) == ("/edge", "/edge/elsewhere")


def test_escapes_in_the_path_below_the_fronts_base_are_kept(module: ModuleFactory) -> None:
    running = module(APP_COMMAND, "--path-base", "/shop", "--forwarded-headers")
    seen = running.get_json("/shop/a%2Fb%20c", headers={"X-Forwarded-Prefix": "/my%20edge"})
    assert seen["root_path"] == "/my edge/shop"
    assert seen["path"] == "/my edge/shop/a/b c"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_app_dies_with_a_sigkilled_module(module: ModuleFactory) -> None:
    running = module(APP_COMMAND)
    pid = running.get_json("/")["pid"]
    assert pid_alive(pid)
    running.process.send_signal(signal.SIGKILL)
    running.process.wait(10)
    assert wait_gone(pid, 10), f"app process {pid} outlived the killed module"


def test_a_command_that_cannot_run_gets_a_502_naming_it(module: ModuleFactory) -> None:
    running = module(["no-such-command-for-tiercel-tests"], "--rapid-fails-per-minute", "100")
    status, body = running.request("GET", "/")
    assert status == 502
    assert b"could not be started" in body
    assert b"no-such-command-for-tiercel-tests" in body
    assert b"No such file or directory" in body


def test_early_hints_reach_a_raw_socket_client_before_the_response(
    module: ModuleFactory,
) -> None:
    running = module(EARLY_HINTS_COMMAND)
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
        sock.sendall(b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = recv_until_closed(sock, timeout=30)
    hints, _, rest = received.partition(b"\r\n\r\n")
    assert hints.split(b"\r\n") == [
        b"HTTP/1.1 103 Early Hints",
        b"link: </style.css>; rel=preload; as=style",
    ]
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest.endswith(b"\r\n\r\nfinal")


def test_early_hints_are_not_sent_to_an_http10_client(module: ModuleFactory) -> None:
    running = module(EARLY_HINTS_COMMAND)
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
        sock.sendall(b"GET /page HTTP/1.0\r\n\r\n")
        received = recv_until_closed(sock, timeout=30)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n") and received.endswith(b"final")


@pytest.mark.peer("curl")
def test_curl_shows_the_early_hints(module: ModuleFactory) -> None:
    curl = require_peer("curl")
    running = module(EARLY_HINTS_COMMAND)
    result = subprocess.run(
        [curl, "-sS", "-v", "--max-time", "30", f"http://127.0.0.1:{running.port}/page"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [line.rstrip("\r") for line in result.stderr.splitlines() if line.startswith("< ")]
    assert lines[0] == "< HTTP/1.1 103 Early Hints"
    assert "< link: </style.css>; rel=preload; as=style" in lines
    assert "< HTTP/1.1 200 OK" in lines[2:]
    assert result.stdout == "final"
