"""``--rejection-log-level``: the line logged for a request refused before the app saw it is
written at the chosen level, on every adapter, so it can be raised above ``--log-level`` (always
visible) or lowered below it (kept out of a busy log)."""

from __future__ import annotations

import socket

import pytest
from edge_peers import Tiercel
from support import recv_until_closed
from tiercel.apps.options import ServerOptions
from tiercel.core.errors import ConfigError

APPS = {"asyncio": "edge_app:app", "trio": "edge_app:app", "threads": "edge_app:wsgi_app"}
MALFORMED = b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 12x\r\n\r\n"


def log_after_one_malformed_request(adapter: str, *levels: str) -> str:
    server = Tiercel("--adapter", adapter, "--no-access-log", *levels, app=APPS[adapter])
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(MALFORMED)
            answer = recv_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
    finally:
        server.stop()
    return server.text  # the whole log: a line that was going to be written is in it


def rejection_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("rejected ")]


@pytest.mark.parametrize("adapter", list(APPS))
@pytest.mark.parametrize(
    ("levels", "logged"),
    [
        ((), True),  # today's behaviour: INFO, shown at the default --log-level info
        (("--rejection-log-level", "debug"), False),
        (("--rejection-log-level", "debug", "--log-level", "debug"), True),
        (("--log-level", "warning"), False),
        (("--rejection-log-level", "warning", "--log-level", "warning"), True),
        (("--rejection-log-level", "warning", "--log-level", "error"), False),
        (("--rejection-log-level", "error", "--log-level", "error"), True),
    ],
)
def test_rejection_line_follows_the_chosen_level(
    adapter: str, levels: tuple[str, ...], logged: bool
) -> None:
    log = log_after_one_malformed_request(adapter, *levels)
    lines = rejection_lines(log)
    if logged:
        assert len(lines) == 1, log
        assert lines[0].startswith("rejected 400 from 127.0.0.1:"), lines
        assert lines[0].endswith("[bad_request]"), lines
    else:
        assert lines == [], log


def test_unknown_level_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown rejection log level 'loud'; choose one of"):
        ServerOptions(urls="http://127.0.0.1:0", rejection_log_level="loud")
