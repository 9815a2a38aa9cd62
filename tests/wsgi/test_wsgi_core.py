"""core/wsgi.py without sockets: a real engine connection fed bytes, and a host whose waits
feed it more. Also telling WSGI apps from ASGI ones."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import flask
import pytest
from tiercel.apps.loader import detect_interface, resolve_interface
from tiercel.core.context import ServerContext, TransportInfo
from tiercel.core.events import RequestReceived
from tiercel.core.http1 import Http1Protocol
from tiercel.core.stream import ClientDisconnected, HttpStream
from tiercel.core.wsgi import (
    FileWrapper,
    WsgiCycle,
    WsgiError,
    WsgiErrors,
    WsgiInput,
    parse_headers,
    parse_status,
)

T = TypeVar("T")


class FeedingHost:
    """A WsgiHost whose wait_for_body feeds the engine the next prepared piece of bytes."""

    def __init__(self, conn: Http1Protocol, pieces: list[bytes]) -> None:
        self.conn = conn
        self.pieces = pieces
        self.waits = 0
        self.output = b""

    def now(self) -> float:
        return 0.0

    def call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        finally:
            self.output += self.conn.data_to_send()

    def wait_for_body(self, stream: HttpStream) -> None:
        self.waits += 1
        self.conn.receive_data(self.pieces.pop(0) if self.pieces else b"", 0.0)

    def wait_writable(self, stream: HttpStream) -> None:
        pass


def request(head: bytes, pieces: list[bytes]) -> tuple[HttpStream, FeedingHost]:
    conn = Http1Protocol(ServerContext(), TransportInfo(("127.0.0.1", 80), ("10.0.0.1", 5555)), 0.0)
    (event,) = conn.receive_data(head, 0.0)
    assert isinstance(event, RequestReceived)
    return event.stream, FeedingHost(conn, pieces)


def test_input_pulls_the_body_piece_by_piece():
    stream, host = request(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n", [b"ab\ncd", b"ef\ngh", b"ij\n"]
    )
    body = WsgiInput(stream, host)
    assert body.readline() == b"ab\n"
    assert host.waits == 1  # one piece was enough for the first line
    assert body.read(2) == b"cd"
    assert body.readline(2) == b"ef"
    assert list(body) == [b"\n", b"ghij\n"]
    assert body.read() == b""
    assert host.waits == 3


def test_input_read_all_and_eof():
    stream, host = request(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc", [b"def"])
    body = WsgiInput(stream, host)
    assert body.read() == b"abcdef"
    assert body.read(10) == b""
    assert body.readlines() == []


def test_input_raises_when_the_body_is_cut_off():
    stream, host = request(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc", [])
    body = WsgiInput(stream, host)
    assert body.read(3) == b"abc"
    with pytest.raises(ClientDisconnected):
        body.read(10)  # the client closes (b"") before sending the rest


def test_cycle_answers_500_when_the_app_fails_before_starting():
    stream, host = request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", [])

    def app(environ, start_response):
        raise RuntimeError("boom")

    cycle = WsgiCycle(app, stream, host, WsgiErrors(lambda line: None))
    with pytest.raises(RuntimeError):
        cycle.run()
    assert cycle.app_finished(0.0) is None  # the host logged the exception itself
    assert (host.output + host.conn.data_to_send()).startswith(
        b"HTTP/1.1 500 Internal Server Error\r\n"
    )


def test_file_wrapper_is_sent_in_large_blocks():
    class Reads:
        def __init__(self) -> None:
            self.sizes: list[int] = []
            self.left = 600_000
            self.closed = False

        def read(self, size: int) -> bytes:
            self.sizes.append(size)
            n = min(size, self.left)
            self.left -= n
            return b"f" * n

        def close(self) -> None:
            self.closed = True

    stream, host = request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", [])
    file = Reads()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "600000")])
        return environ["wsgi.file_wrapper"](file, 1024)

    cycle = WsgiCycle(app, stream, host, WsgiErrors(lambda line: None))
    cycle.run()
    assert cycle.app_finished(0.0) is None
    assert file.closed
    assert set(file.sizes) == {256 * 1024}
    assert host.output.endswith(b"f" * 1000)
    assert isinstance(cycle.environ["wsgi.file_wrapper"](file), FileWrapper)


@pytest.mark.parametrize(
    ("status", "expected"),
    [("200 OK", (200, "OK")), ("404 Not Found", (404, "Not Found")), ("599 ", (599, None))],
)
def test_parse_status(status, expected):
    assert parse_status(status) == expected


@pytest.mark.parametrize("status", ["200OK", "OK", "20 OK", "100 Continue", "200 O\nK", b"200 OK"])
def test_parse_status_rejects(status):
    with pytest.raises(WsgiError):
        parse_status(status)


def test_parse_headers():
    headers, length = parse_headers([("Content-Length", "5"), ("X-A", " b ")])
    assert headers == [(b"Content-Length", b"5"), (b"X-A", b"b")]
    assert length == 5
    for bad in (
        [("X", "a\nb")],
        [("X Y", "v")],
        [("X", "caf\u20ac")],
        [("X", 1)],
        [("Content-Length", "five")],
        ("X", "v"),
        "X: v",
    ):
        with pytest.raises(WsgiError):
            parse_headers(bad)


def test_wsgi_errors_is_line_buffered():
    lines: list[str] = []
    errors = WsgiErrors(lines.append)
    errors.write("one\ntw")
    errors.writelines(["o\n", "three"])
    assert lines == ["one", "two"]
    errors.flush()
    assert lines == ["one", "two", "three"]


def wsgi_function(environ, start_response):
    return []


class WsgiCallable:
    def __call__(self, environ, start_response):
        return []


async def asgi_function(scope, receive, send):
    pass


class AsgiCallable:
    async def __call__(self, scope, receive, send):
        pass


class SyncAsgiMiddleware:
    def __call__(self, scope, receive, send) -> Any:
        return asgi_function(scope, receive, send)


def test_detect_interface():
    assert detect_interface(flask.Flask("x")) == "wsgi"
    assert detect_interface(wsgi_function) == "wsgi"
    assert detect_interface(WsgiCallable()) == "wsgi"
    assert detect_interface(functools.partial(wsgi_function)) == "wsgi"
    assert detect_interface(asgi_function) == "asgi"
    assert detect_interface(AsgiCallable()) == "asgi"
    assert detect_interface(SyncAsgiMiddleware()) == "asgi"
    assert detect_interface(lambda *args: None) is None
    assert resolve_interface(lambda *args: None, "auto") == "asgi"
    assert resolve_interface(lambda *args: None, "auto", unclear="wsgi") == "wsgi"
    assert resolve_interface(asgi_function, "wsgi") == "wsgi"
