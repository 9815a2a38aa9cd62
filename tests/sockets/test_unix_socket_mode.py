"""``unix:/path?mode=NNNN``: the socket file gets exactly that mode, whatever the umask."""

from __future__ import annotations

import os
import re
import stat

import pytest
from processes import http_get, tiercel_argv
from sockets_helpers import ADAPTER_APPS, one_error_line, unix


@pytest.mark.parametrize(
    ("adapter", "mode"),
    [("asyncio", 0o660), ("asyncio", 0o600), ("trio", 0o666), ("threads", 0o640)],
)
def test_socket_file_gets_the_mode(spawn, tmp_path, adapter, mode):
    path = tmp_path / "app.sock"
    server = spawn(
        tiercel_argv(
            ADAPTER_APPS[adapter], "--adapter", adapter, "--urls", f"unix:{path}?mode={mode:04o}"
        )
    )
    server.wait_for(rf"listening on unix:{re.escape(str(path))} \(mode {mode:04o}\)$")
    status = os.stat(path)
    assert stat.S_ISSOCK(status.st_mode)
    assert stat.S_IMODE(status.st_mode) == mode
    interface = "wsgi" if adapter == "threads" else "asgi"
    assert http_get(unix(path), "/mode") == (200, f"{interface} /mode listen_fds=-".encode())
    assert server.stop() == 0
    assert not path.exists(), "tiercel made this socket file, so it removes it on exit"


def test_mode_wider_than_the_umask(spawn, tmp_path):
    # 0666 under the usual umask 022 would come out 0644 if the mode came from the umask.
    path = tmp_path / "wide.sock"
    server = spawn(tiercel_argv("sockets_apps:app", "--urls", f"unix:{path}?mode=666"))
    server.wait_for(r"\(mode 0666\)$")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    assert server.stop() == 0


def test_without_a_mode_nothing_is_said(spawn, tmp_path):
    path = tmp_path / "plain.sock"
    server = spawn(tiercel_argv("sockets_apps:app", "--urls", f"unix:{path}"))
    server.wait_for(rf"listening on unix:{re.escape(str(path))}$")
    assert server.stop() == 0


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("mode=0999", "mode '0999' is not an octal permission"),
        ("mode=rw", "mode 'rw' is not an octal permission"),
        ("mode=01777", "mode '01777' is not an octal permission"),
        ("owner=www", "unknown option 'owner'"),
    ],
)
def test_bad_modes(spawn, tmp_path, query, words):
    url = f"unix:{tmp_path / 'x.sock'}?{query}"
    line = one_error_line(spawn(tiercel_argv("sockets_apps:app", "--urls", url)), 2)
    assert url in line and words in line
