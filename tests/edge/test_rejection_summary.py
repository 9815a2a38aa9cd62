"""The rejection counts for command-line users: every server (and every worker under
``--workers``) logs one line with the requests refused before the app, by reason, when it stops
gracefully, and the same line whenever it gets SIGUSR1, while it goes on serving."""

from __future__ import annotations

import re
import signal
import socket

import pytest
from edge_peers import Tiercel
from support import recv_until_closed
from tiercel.apps.logs import format_rejection_summary

APPS = {"asyncio": "edge_app:app", "trio": "edge_app:app", "threads": "edge_app:wsgi_app"}
BAD_CONTENT_LENGTH = b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 12x\r\n\r\n"
HUGE_HEADER = b"GET / HTTP/1.1\r\nhost: a\r\nx-big: " + b"a" * 40_000 + b"\r\n\r\n"
SUMMARY = r"^requests refused before the app: .*$"


def send(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        return recv_until_closed(sock)


def refuse_three(port: int) -> None:
    for _ in range(2):
        answer = send(port, BAD_CONTENT_LENGTH)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
    answer = send(port, HUGE_HEADER)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]


def summaries(server: Tiercel) -> list[str]:
    return [line for line in server.lines if re.match(SUMMARY, line)]


EXPECTED = "requests refused before the app: 3 (bad_request 2, headers_too_large 1)"


@pytest.mark.parametrize("adapter", list(APPS))
def test_sigusr1_then_shutdown_log_the_counts(adapter: str) -> None:
    server = Tiercel("--adapter", adapter, "--no-access-log", app=APPS[adapter])
    try:
        refuse_three(server.port)
        server.proc.send_signal(signal.SIGUSR1)
        server.wait_for(re.escape(EXPECTED))
        # Still serving after SIGUSR1.
        assert send(server.port, b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")[
            :13
        ] == (b"HTTP/1.1 200 ")
        assert server.stop() == 0
    finally:
        server.close()
    assert summaries(server) == [EXPECTED, EXPECTED], server.text
    lines = server.lines
    assert lines.index(EXPECTED, lines.index(EXPECTED) + 1) < lines.index("stopped")


@pytest.mark.parametrize("adapter", list(APPS))
def test_nothing_refused(adapter: str) -> None:
    """Shutdown says nothing when nothing was refused; SIGUSR1 (someone asked) says 0."""
    server = Tiercel("--adapter", adapter, "--no-access-log", app=APPS[adapter])
    try:
        server.proc.send_signal(signal.SIGUSR1)
        server.wait_for("^requests refused before the app: 0$")
        assert server.stop() == 0
    finally:
        server.close()
    assert summaries(server) == ["requests refused before the app: 0"], server.text


WORKER_SUMMARY = r"^\[worker (\d+)\] requests refused before the app: (\d+)"


def worker_totals(lines: list[str]) -> dict[str, int]:
    """Worker pid -> the total in its summary line."""
    matches = [re.match(WORKER_SUMMARY, line) for line in lines]
    return {match.group(1): int(match.group(2)) for match in matches if match}


def test_each_worker_logs_its_own_counts() -> None:
    """Under --workers each worker counts what it refused: SIGUSR1 to the supervisor makes every
    serving worker log its line (0 included), and at shutdown those that refused something do;
    the lines add up to every refusal."""
    server = Tiercel("--workers", "2", "--no-access-log")
    try:
        server.wait_for(r"^supervising 2 workers")
        refuse_three(server.port)
        server.proc.send_signal(signal.SIGUSR1)
        on_signal = [match.string for match in server.wait_for_lines(WORKER_SUMMARY, 2)]
        assert server.stop() == 0
    finally:
        server.close()
    assert len(worker_totals(on_signal)) == 2 and sum(worker_totals(on_signal).values()) == 3
    stopping = server.text.partition("shutting down 2 worker(s)")[2].splitlines()
    at_shutdown = worker_totals(stopping)
    assert sum(at_shutdown.values()) == 3 and 0 not in at_shutdown.values(), server.text
    assert summaries(server) == [], server.text  # the supervisor refuses nothing itself


def test_format() -> None:
    counts = {"headers_too_large": 1, "bad_request": 2, "timeout": 0, "bad_method": 1}
    assert format_rejection_summary(counts) == (
        "requests refused before the app: 4 (bad_request 2, bad_method 1, headers_too_large 1)"
    )
    assert format_rejection_summary({}) == "requests refused before the app: 0"
