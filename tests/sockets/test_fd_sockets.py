"""``fd://N``: serving on a listening socket the parent made and passed as descriptor N."""

from __future__ import annotations

import os
import re
import socket
import ssl

import pytest
import trustme
from processes import free_port, http_get, tiercel_argv
from sockets_helpers import ADAPTER_APPS, listening_socket, one_error_line, tcp, unix


@pytest.mark.parametrize("adapter", ADAPTER_APPS)
def test_serves_on_an_inherited_tcp_socket(spawn, adapter):
    with listening_socket() as sock:
        fd, port = sock.fileno(), sock.getsockname()[1]
        extra_port = free_port()
        server = spawn(
            tiercel_argv(
                ADAPTER_APPS[adapter],
                "--adapter",
                adapter,
                "--urls",
                f"fd://{fd};http://127.0.0.1:{extra_port}",
            ),
            pass_fds=[fd],
        )
        server.wait_for(rf"listening on http://127\.0\.0\.1:{port} \(inherited fd {fd}\)$")
        server.wait_for(rf"listening on http://127\.0\.0\.1:{extra_port}$")
        interface = "wsgi" if adapter == "threads" else "asgi"
        for attempt in range(3):
            assert http_get(tcp(port), f"/over-fd/{attempt}") == (
                200,
                f"{interface} /over-fd/{attempt} listen_fds=-".encode(),
            )
        assert http_get(tcp(extra_port), "/bound")[0] == 200
        assert server.stop() == 0
        # The child closed its copy and no more: the parent's socket still takes connections.
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            accepted, _ = sock.accept()
            accepted.close()


def test_inherited_unix_socket_file_is_left_to_its_owner(spawn, tmp_path):
    path = tmp_path / "owned-by-parent.sock"
    with listening_socket(socket.AF_UNIX, str(path)) as sock:
        fd = sock.fileno()
        server = spawn(tiercel_argv("sockets_apps:app", "--urls", f"fd://{fd}"), pass_fds=[fd])
        server.wait_for(rf"listening on unix:{re.escape(str(path))} \(inherited fd {fd}\)$")
        assert http_get(unix(path), "/u") == (200, b"asgi /u listen_fds=-")
        assert server.stop() == 0
        assert path.is_socket(), "tiercel removed a socket file it did not create"


def test_inherited_socket_with_tls(spawn, tmp_path):
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    with listening_socket() as sock:
        fd, port = sock.fileno(), sock.getsockname()[1]
        server = spawn(
            tiercel_argv(
                "sockets_apps:app",
                "--urls",
                f"fd://{fd}?tls",
                "--certfile",
                str(cert),
                "--keyfile",
                str(key),
            ),
            pass_fds=[fd],
        )
        server.wait_for(rf"listening on https://127\.0\.0\.1:{port} \(inherited fd {fd}\)$")
        assert http_get(tcp(port), "/secure", tls=client, server_hostname="127.0.0.1") == (
            200,
            b"asgi /secure listen_fds=-",
        )
        assert server.stop() == 0


def test_fd_that_is_not_open(spawn):
    # Only the descriptors in pass_fds reach the child, so 57 is not open there.
    server = spawn(tiercel_argv("sockets_apps:app", "--urls", "fd://57"))
    line = one_error_line(server, 1)
    assert "fd://57" in line and "fd 57 is not open" in line


def test_fd_that_is_a_pipe(spawn):
    read_end, write_end = os.pipe()
    try:
        server = spawn(
            tiercel_argv("sockets_apps:app", "--urls", f"fd://{read_end}"), pass_fds=[read_end]
        )
        line = one_error_line(server, 1)
        assert f"fd {read_end} is a pipe, not a socket" in line
    finally:
        os.close(read_end)
        os.close(write_end)


def test_fd_that_is_a_regular_file(spawn, tmp_path):
    with open(tmp_path / "plain.txt", "w") as file:
        fd = file.fileno()
        server = spawn(tiercel_argv("sockets_apps:app", "--urls", f"fd://{fd}"), pass_fds=[fd])
        line = one_error_line(server, 1)
    assert f"fd {fd} is a regular file, not a socket" in line


def test_fd_that_is_not_listening(spawn):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, but nobody called listen()
        fd = sock.fileno()
        server = spawn(tiercel_argv("sockets_apps:app", "--urls", f"fd://{fd}"), pass_fds=[fd])
        line = one_error_line(server, 1)
    assert f"fd {fd} is a socket that is not listening" in line


def test_fd_that_is_a_datagram_socket(spawn):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        fd = sock.fileno()
        server = spawn(tiercel_argv("sockets_apps:app", "--urls", f"fd://{fd}"), pass_fds=[fd])
        line = one_error_line(server, 1)
    assert f"fd {fd} is a SOCK_DGRAM socket" in line


def test_same_fd_twice(spawn):
    with listening_socket() as sock:
        fd = sock.fileno()
        server = spawn(
            tiercel_argv("sockets_apps:app", "--urls", f"fd://{fd};fd://{fd}"), pass_fds=[fd]
        )
        line = one_error_line(server, 1)
    assert f"fd {fd} is already used by another listen URL" in line


def test_tls_on_an_inherited_unix_socket_is_refused(spawn, tmp_path):
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    cert = tmp_path / "both.pem"
    cert.write_bytes(leaf.private_key_and_cert_chain_pem.bytes())
    with listening_socket(socket.AF_UNIX, str(tmp_path / "s.sock")) as sock:
        fd = sock.fileno()
        server = spawn(
            tiercel_argv("sockets_apps:app", "--urls", f"fd://{fd}?tls", "--certfile", str(cert)),
            pass_fds=[fd],
        )
        line = one_error_line(server, 1)
    assert "?tls is for TCP sockets only" in line


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("fd://three", "write the descriptor number"),
        ("fd://3?tls=no", "write ?tls (with no value)"),
        ("fd://3?mode=0660", "unknown option 'mode'"),
    ],
)
def test_bad_fd_urls(spawn, url, words):
    line = one_error_line(spawn(tiercel_argv("sockets_apps:app", "--urls", url)), 2)
    assert url in line and words in line
