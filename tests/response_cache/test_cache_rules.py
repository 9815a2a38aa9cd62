"""The cache's rules and settings without sockets: lifetimes, sizes, the command line, and the
engine's hook fed bytes directly (pipelined hits, Age)."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from tiercel.apps.cli import build_parser, options_from_args
from tiercel.apps.hosting import response_cache_settings
from tiercel.core.config import EngineConfig
from tiercel.core.context import ServerContext, TransportInfo
from tiercel.core.errors import ConfigError
from tiercel.core.events import RequestReceived
from tiercel.core.http1 import Http1Protocol
from tiercel.core.response_cache import ResponseCacheSettings, parse_size, response_lifetime

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "lifetime"),
    [
        ([(b"cache-control", b"public, max-age=30")], 30.0),
        ([(b"Cache-Control", b"PUBLIC, s-maxage=10, max-age=30")], 10.0),
        ([(b"cache-control", b"public"), (b"cache-control", b"max-age=5")], 5.0),
        ([(b"expires", formatdate(NOW + 90, usegmt=True).encode())], 90.0),
        (
            [
                (b"date", formatdate(NOW - 10, usegmt=True).encode()),
                (b"expires", formatdate(NOW + 50, usegmt=True).encode()),
            ],
            60.0,
        ),
    ],
)
def test_cacheable_lifetimes(headers: list[tuple[bytes, bytes]], lifetime: float) -> None:
    assert response_lifetime(headers, NOW) == pytest.approx(lifetime)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"cache-control", b"max-age=30")],  # not public
        [(b"cache-control", b"public")],  # no lifetime
        [(b"cache-control", b"public, max-age=0")],
        [(b"cache-control", b"public, max-age=30, private")],
        [(b"cache-control", b"public, max-age=30, no-cache")],
        [(b"cache-control", b"public, max-age=30"), (b"Set-Cookie", b"a=b")],
        [(b"cache-control", b"public, max-age=30"), (b"vary", b"*")],
        [(b"cache-control", b"public, max-age=30"), (b"pragma", b"no-cache")],
        [(b"expires", b"0")],  # invalid: already expired
        [(b"expires", formatdate(NOW - 1, usegmt=True).encode())],
        [],
    ],
)
def test_uncacheable_responses(headers: list[tuple[bytes, bytes]]) -> None:
    assert response_lifetime(headers, NOW) is None


@pytest.mark.parametrize(
    ("text", "size"),
    [("64MiB", 64 << 20), ("512KiB", 512 << 10), ("1GB", 10**9), ("65536", 65536), ("2 mb", 2e6)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-5MiB", "0", "12 parsecs"])
def test_bad_sizes_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ConfigError, match=r"e\.g\. 64MiB"):
        parse_size(text)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="max_size must be a positive number"):
        ResponseCacheSettings(max_size=0)
    with pytest.raises(ConfigError, match="response_cache must be ResponseCacheSettings"):
        EngineConfig(response_cache=64)  # type: ignore[arg-type]


def test_the_command_line_option() -> None:
    parser = build_parser()
    options = options_from_args(parser.parse_args(["--response-cache", "64MiB"]))
    assert options.engine.response_cache == ResponseCacheSettings(max_size=64 << 20)
    options = options_from_args(
        parser.parse_args(["--response-cache", "1MiB", "--response-cache-max-entry", "8KiB"])
    )
    assert options.engine.response_cache == ResponseCacheSettings(1 << 20, 8 << 10)
    assert options_from_args(parser.parse_args([])).engine.response_cache is None
    with pytest.raises(ConfigError, match="needs --response-cache"):
        options_from_args(parser.parse_args(["--response-cache-max-entry", "8KiB"]))


def test_server_keyword_accepts_sizes() -> None:
    assert response_cache_settings("2MiB") == ResponseCacheSettings(2 << 20)
    assert response_cache_settings(1000) == ResponseCacheSettings(1000)
    assert response_cache_settings(None) is None


def _engine() -> tuple[ServerContext, Http1Protocol]:
    context = ServerContext(EngineConfig(response_cache=ResponseCacheSettings(1 << 20)))
    return context, Http1Protocol(context, TransportInfo(), 0.0)


def _serve_app(conn: Http1Protocol, events: list[object], at: float) -> None:
    for event in events:
        if isinstance(event, RequestReceived):
            stream = event.stream
            stream.response_headers = [(b"cache-control", b"public, max-age=100")]
            stream.complete(b"from the app", at)
            stream.finish()


def test_many_pipelined_hits_are_answered_in_order_without_recursion() -> None:
    context, conn = _engine()
    request = b"GET /p HTTP/1.1\r\nhost: example\r\n\r\n"
    _serve_app(conn, conn.receive_data(request, 1.0), 1.0)
    first = conn.data_to_send()
    assert b"from the app" in first
    # Far more pipelined hits than the recursion limit would allow one frame each.
    events = conn.receive_data(request * 3000, 31.0)
    assert not [e for e in events if isinstance(e, RequestReceived)]  # the app never runs
    out = conn.data_to_send()
    assert out.count(b"HTTP/1.1 200 OK") == 3000
    assert out.count(b"age: 30\r\n") == 3000
    assert context.response_cache_counters["hits"] == 3000


def test_host_and_default_port_normalise_the_key() -> None:
    context, conn = _engine()
    _serve_app(conn, conn.receive_data(b"GET /k HTTP/1.1\r\nhost: Example:80\r\n\r\n", 1.0), 1.0)
    conn.data_to_send()
    events = conn.receive_data(b"GET /k HTTP/1.1\r\nhost: example\r\n\r\n", 2.0)
    assert not [e for e in events if isinstance(e, RequestReceived)]
    assert context.response_cache_counters["hits"] == 1
