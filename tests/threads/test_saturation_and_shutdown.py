"""The pool saturated (queue, then 503 with Retry-After, and a log line that says so), and
graceful shutdown with requests in flight."""

from __future__ import annotations

import logging
import threading
import time

import httpx
from support import recv_until_closed

GATES: dict[str, threading.Event] = {}


def gate(name: str) -> threading.Event:
    return GATES.setdefault(name, threading.Event())


def slow_app(environ, start_response):
    """``/slow/<name>`` waits for the gate ``<name>``; anything else answers at once."""
    path = environ["PATH_INFO"]
    if path.startswith("/slow/"):
        name = path[len("/slow/") :]
        gate(name + ":started").set()
        gate(name).wait(10)
    body = f"done {path}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def get_in_background(url: str, results: dict[str, object], key: str) -> threading.Thread:
    def run() -> None:
        try:
            response = httpx.get(url, timeout=10)
            results[key] = (response.status_code, response.text, dict(response.headers))
        except Exception as exc:
            results[key] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_saturated_pool_queues_then_answers_503(threads_serve, server_log):
    GATES.clear()
    server = threads_serve(slow_app, threads=2, queue_limit=1)
    results: dict[str, object] = {}
    first = get_in_background(server.url + "/slow/a", results, "a")
    second = get_in_background(server.url + "/slow/b", results, "b")
    assert gate("a:started").wait(5) and gate("b:started").wait(5)
    # Both workers are busy: the third connection waits in the queue ...
    with server.connect() as third:
        third.sendall(b"GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        deadline = time.monotonic() + 5
        while server.server.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.server.waiting == 1
        # ... and the fourth finds the queue full: 503 with Retry-After, from the acceptor.
        with server.connect() as fourth:
            fourth.sendall(b"GET /fourth HTTP/1.1\r\nHost: x\r\n\r\n")
            refused = recv_until_closed(fourth)
        assert refused.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"\r\nretry-after: 1\r\n" in refused.lower()
        warnings = server_log.messages(logging.WARNING)
        assert any(
            "all 2 worker threads are busy; 1 connection(s) waiting" in m for m in warnings
        ), warnings
        assert "server_busy" in server_log.text()
        assert server.server.context.rejections["server_busy"] == 1
        # The waiting connection is served once a worker is free.
        gate("a").set()
        answer = recv_until_closed(third)
    assert answer.endswith(b"done /third")
    gate("b").set()
    first.join(5)
    second.join(5)
    assert results["a"][:2] == (200, "done /slow/a")
    assert results["b"][:2] == (200, "done /slow/b")
    # One warning per saturation episode, not one per connection.
    warnings = server_log.messages(logging.WARNING)
    assert sum("worker threads are busy;" in m for m in warnings) == 1, warnings


def test_graceful_shutdown_finishes_the_request_in_flight(threads_serve):
    GATES.clear()
    server = threads_serve(slow_app, shutdown_timeout=5)
    results: dict[str, object] = {}
    client = get_in_background(server.url + "/slow/inflight", results, "inflight")
    idle = server.connect()
    idle.sendall(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(4096).endswith(b"done /idle")
    assert gate("inflight:started").wait(5)
    started = time.monotonic()
    stopper = server.stop_in_background()
    # The idle keep-alive connection is closed at once; the listener stops accepting.
    assert recv_until_closed(idle, timeout=3) == b""
    idle.close()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            server.connect(timeout=0.5).close()
        except OSError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("still accepting connections while stopping")
    time.sleep(0.2)
    gate("inflight").set()
    client.join(5)
    stopper.join(10)
    status, text, headers = results["inflight"]
    assert (status, text) == (200, "done /slow/inflight")
    assert headers.get("connection") == "close"
    assert time.monotonic() - started < 5


def test_shutdown_timeout_aborts_what_is_left(threads_serve, server_log):
    GATES.clear()
    server = threads_serve(slow_app, shutdown_timeout=0.5)
    results: dict[str, object] = {}
    client = get_in_background(server.url + "/slow/stuck", results, "stuck")
    assert gate("stuck:started").wait(5)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 4
    gate("stuck").set()
    client.join(5)
    assert isinstance(results["stuck"], httpx.HTTPError)
    assert "shutdown timeout (0.5s): aborting 1 connection(s)" in server_log.text()
