"""systemd socket activation, with the real ``systemd-socket-activate``.

It binds the sockets, waits, and execs tiercel only on the first connection, so these tests
connect and retry instead of waiting for a start-up line first."""

from __future__ import annotations

import os

import pytest
from processes import clean_env, free_port, http_get_with_retry, tiercel_argv
from sockets_helpers import ADAPTER_APPS, one_error_line, tcp
from support import require_peer
from tiercel.adapters.sockets import BindError, take_systemd_sockets
from tiercel.apps.cli import _default_urls
from tiercel.core.addresses import DEFAULT_URLS, parse_url


def activate(*listen: str, fdname: str | None = None) -> list[str]:
    argv = [require_peer("systemd-socket-activate")]
    for address in listen:
        argv += ["-l", address]
    if fdname is not None:
        argv.append(f"--fdname={fdname}")
    return argv


@pytest.mark.peer("systemd-socket-activate")
@pytest.mark.parametrize("adapter", ADAPTER_APPS)
def test_activated_socket_by_systemd_url(spawn, adapter):
    port = free_port()
    server = spawn(
        activate(f"127.0.0.1:{port}", fdname="web")
        + tiercel_argv(ADAPTER_APPS[adapter], "--adapter", adapter, "--urls", "systemd://")
    )
    interface = "wsgi" if adapter == "threads" else "asgi"
    # listen_fds=-: tiercel took LISTEN_* out of its environment before the app ran.
    assert http_get_with_retry(tcp(port), "/activated") == (
        200,
        f"{interface} /activated listen_fds=-".encode(),
    )
    server.wait_for(rf"listening on http://127\.0\.0\.1:{port} \(fd 3 from systemd, name 'web'\)$")
    assert server.stop() == 0


@pytest.mark.peer("systemd-socket-activate")
def test_activated_sockets_are_used_when_no_urls_are_given(spawn):
    port = free_port()
    server = spawn(activate(f"127.0.0.1:{port}") + tiercel_argv("sockets_apps:app"))
    assert http_get_with_retry(tcp(port), "/auto")[0] == 200
    # No --fdname: systemd-socket-activate sets no LISTEN_FDNAMES, so there is no name to show.
    server.wait_for(rf"listening on http://127\.0\.0\.1:{port} \(fd 3 from systemd\)$")
    assert not [line for line in server.lines if "localhost:5000" in line]
    assert server.stop() == 0


@pytest.mark.peer("systemd-socket-activate")
@pytest.mark.parametrize("chosen", [["admin"], ["web", "admin"]], ids=["one", "both"])
def test_sockets_chosen_by_name(spawn, chosen):
    ports = {"web": free_port(), "admin": free_port()}  # fd 3 and fd 4, in this order
    urls = ";".join(f"systemd://{name}" for name in chosen)
    server = spawn(
        activate(*(f"127.0.0.1:{port}" for port in ports.values()), fdname="web:admin")
        + tiercel_argv("sockets_apps:app", "--urls", urls)
    )
    for name in chosen:
        expected = (200, f"asgi /{name} listen_fds=-".encode())
        assert http_get_with_retry(tcp(ports[name]), f"/{name}") == expected
        fd = 3 + list(ports).index(name)
        server.wait_for(
            rf"listening on http://127\.0\.0\.1:{ports[name]} "
            rf"\(fd {fd} from systemd, name '{name}'\)$"
        )
    listening = [line for line in server.lines if line.startswith("listening on")]
    assert len(listening) == len(chosen), server.lines
    assert server.stop() == 0


@pytest.mark.peer("systemd-socket-activate")
def test_activated_socket_shared_by_workers(spawn):
    # The supervisor takes the socket and the LISTEN_* variables; its workers inherit the
    # socket but not the variables (listen_fds=- in every answer).
    port = free_port()
    server = spawn(
        activate(f"127.0.0.1:{port}", fdname="web")
        + tiercel_argv("sockets_apps:app", "--workers", "2")
    )
    assert http_get_with_retry(tcp(port), "/first") == (200, b"asgi /first listen_fds=-")
    server.wait_for(rf"listening on http://127\.0\.0\.1:{port} \(fd 3 from systemd, name 'web'\)$")
    for number in range(6):
        assert http_get_with_retry(tcp(port), f"/{number}") == (
            200,
            f"asgi /{number} listen_fds=-".encode(),
        )
    assert server.stop(timeout=30) == 0


@pytest.mark.peer("systemd-socket-activate")
def test_unknown_socket_name(spawn):
    port = free_port()
    server = spawn(
        activate(f"127.0.0.1:{port}", fdname="web")
        + tiercel_argv("sockets_apps:app", "--urls", "systemd://api")
    )
    with pytest.raises(OSError):
        http_get_with_retry(tcp(port), "/", timeout=3)  # activates it; it refuses to start
    line = one_error_line(server, 1)
    assert "systemd passed no socket named 'api' (it passed 'web')" in line


def test_systemd_url_without_activation(spawn):
    line = one_error_line(spawn(tiercel_argv("sockets_apps:app", "--urls", "systemd://")), 1)
    assert "systemd passed no sockets (LISTEN_PID/LISTEN_FDS are not set)" in line


def test_sockets_meant_for_another_process(spawn):
    env = clean_env(LISTEN_PID="1", LISTEN_FDS="1")
    line = one_error_line(
        spawn(tiercel_argv("sockets_apps:app", "--urls", "systemd://"), env=env), 1
    )
    assert "LISTEN_PID is 1 but tiercel runs as pid" in line


def test_default_urls_follow_activation(monkeypatch):
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    assert _default_urls() == "systemd://"
    monkeypatch.setenv("LISTEN_PID", "1")  # meant for another process: not ours to take
    assert _default_urls() == DEFAULT_URLS
    monkeypatch.delenv("LISTEN_FDS")
    assert _default_urls() == DEFAULT_URLS


@pytest.mark.peer("systemd-socket-activate")
def test_activated_sockets_that_urls_leave_out_are_reported(spawn):
    activated, bound = free_port(), free_port()
    server = spawn(
        activate(f"127.0.0.1:{activated}")
        + tiercel_argv("sockets_apps:app", "--urls", f"http://127.0.0.1:{bound}")
    )
    with pytest.raises(OSError):
        # Starts tiercel; it never accepts on the socket its --urls left out.
        http_get_with_retry(tcp(activated), "/", timeout=2)
    assert http_get_with_retry(tcp(bound), "/bound")[0] == 200
    server.wait_for(r"systemd passed 1 socket\(s\) that --urls does not use; add systemd://")
    assert server.stop() == 0


def test_environment_is_taken_even_when_it_is_wrong(monkeypatch):
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_FDNAMES", "only-one")
    with pytest.raises(BindError, match="LISTEN_FDNAMES has 1 names for LISTEN_FDS=2"):
        take_systemd_sockets(parse_url("systemd://"))
    assert not {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} & set(os.environ)


def test_names_from_the_environment(monkeypatch):
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "3")
    monkeypatch.setenv("LISTEN_FDNAMES", "web:web:admin")
    taken = take_systemd_sockets(parse_url("systemd://"))
    assert [(s.fd, s.name) for s in taken] == [(3, "web"), (4, "web"), (5, "admin")]
    assert "LISTEN_FDS" not in os.environ
