"""The engine's root_path on bytes, through both protocols: a path base matches caselessly on
segment boundaries (as HTTP.sys prefixes and ASP.NET Core's UsePathBase do) and reaches the
app in the request's own spelling; the prefix table uses the same rule."""

from __future__ import annotations

import h2.config
import h2.connection
import pytest
from tiercel.core.config import EngineConfig
from tiercel.core.context import ServerContext, TransportInfo
from tiercel.core.events import RequestReceived
from tiercel.core.forwarded import ForwardedHeaders, ForwardedOptions
from tiercel.core.http1 import Http1Protocol
from tiercel.core.http2 import Http2Limits, Http2Protocol
from tiercel.core.stream import HttpStream
from tiercel.core.url_prefixes import PrefixTable, match_path_base, parse_url_prefix

PEER = ("127.0.0.1", 50000)
LOCAL = ("127.0.0.1", 8000)


def engine_config(root_path: str, *, forwarded: bool = False) -> EngineConfig:
    if not forwarded:
        return EngineConfig(root_path=root_path)
    trusted = ForwardedOptions(headers=ForwardedHeaders.X_FORWARDED_PREFIX)
    return EngineConfig(root_path=root_path, forwarded=trusted)


def h1_stream(config: EngineConfig, target: str, extra: str = "") -> HttpStream:
    conn = Http1Protocol(ServerContext(config, wall_time=1e9), TransportInfo(LOCAL, PEER), 0.0)
    head = f"GET {target} HTTP/1.1\r\nHost: app.test\r\n{extra}\r\n"
    events = conn.receive_data(head.encode("latin-1"), 0.0)
    (stream,) = [e.stream for e in events if isinstance(e, RequestReceived)]
    return stream


def h2_stream(
    config: EngineConfig, target: str, extra: list[tuple[str, str]] | None = None
) -> HttpStream:
    server = Http2Protocol(
        ServerContext(config, wall_time=1e9), TransportInfo(LOCAL, PEER), 0.0, Http2Limits()
    )
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    server.receive_data(client.data_to_send(), 0.0)
    client.receive_data(server.data_to_send())
    request = [(":method", "GET"), (":scheme", "http"), (":authority", "app.test")]
    client.send_headers(1, [*request, (":path", target), *(extra or [])], end_stream=True)
    events = server.receive_data(client.data_to_send(), 0.0)
    (stream,) = [e.stream for e in events if isinstance(e, RequestReceived)]
    return stream


# target -> (path base, path) with root_path "/out"
CASES = [
    ("/OUT/abc", ("/OUT", "/abc")),
    ("/out/abc", ("/out", "/abc")),
    ("/Out", ("/Out", "")),
    ("/oUt/", ("/oUt", "/")),
    ("/%4FUT/a%20b", ("/OUT", "/a b")),  # compared decoded, like the prefix table
    ("/outx", ("", "/outx")),  # not a segment boundary
    ("/OUTX/y", ("", "/OUTX/y")),
    ("/ou", ("", "/ou")),
    ("/other/out", ("", "/other/out")),
    ("/", ("", "/")),
]


@pytest.mark.parametrize(("target", "expected"), CASES)
def test_http1_root_path_matches_caselessly_in_the_requests_spelling(
    target: str, expected: tuple[str, str]
) -> None:
    stream = h1_stream(engine_config("/out"), target)
    assert (stream.path_base, stream.path) == expected


@pytest.mark.parametrize(("target", "expected"), CASES)
def test_http2_root_path_matches_caselessly_in_the_requests_spelling(
    target: str, expected: tuple[str, str]
) -> None:
    stream = h2_stream(engine_config("/out"), target)
    assert (stream.path_base, stream.path) == expected


def test_non_ascii_root_path_matches_caselessly() -> None:
    stream = h1_stream(engine_config("/caf\u00e9"), "/CAF%C3%89/menu")
    assert (stream.path_base, stream.path) == ("/CAF\u00c9", "/menu")


def test_without_root_path_nothing_is_taken_off() -> None:
    stream = h1_stream(EngineConfig(), "/OUT/abc")
    assert (stream.path_base, stream.path) == ("", "/OUT/abc")


def test_forwarded_prefix_goes_in_front_of_the_root_path_h1() -> None:
    stream = h1_stream(
        engine_config("/out", forwarded=True), "/OUT/abc", "X-Forwarded-Prefix: /edge\r\n"
    )
    assert (stream.path_base, stream.path) == ("/edge/OUT", "/abc")
    assert (b"x-original-prefix", b"/OUT") in stream.headers


def test_forwarded_prefix_goes_in_front_of_the_root_path_h2() -> None:
    stream = h2_stream(
        engine_config("/out", forwarded=True), "/out/abc", [("x-forwarded-prefix", "/edge")]
    )
    assert (stream.path_base, stream.path) == ("/edge/out", "/abc")


def test_forwarded_prefix_alone_is_the_path_base() -> None:
    stream = h1_stream(
        engine_config("/out", forwarded=True), "/elsewhere", "X-Forwarded-Prefix: /edge\r\n"
    )
    assert (stream.path_base, stream.path) == ("/edge", "/elsewhere")


@pytest.mark.parametrize(
    ("path", "base", "expected"),
    [
        ("/api/x", "/api", "/api"),
        ("/API/x", "/api", "/API"),
        ("/Api", "/api", "/Api"),
        ("/apix", "/api", None),
        ("/ap", "/api", None),
        ("/a/B/c", "/a/b", "/a/B"),
        ("/a//b", "/a/b", None),
        ("*", "/api", None),
        ("/anything", "", ""),
        ("", "", ""),
    ],
)
def test_match_path_base(path: str, base: str, expected: str | None) -> None:
    assert match_path_base(path, base) == expected


def test_prefix_table_and_engine_agree_on_every_case() -> None:
    """One rule for both: what the table calls the path base of /out/ is the engine's too."""
    table: PrefixTable[str] = PrefixTable([(parse_url_prefix("http://+:80/out/"), "app")])
    for target, (path_base, _) in CASES:
        stream = h1_stream(engine_config("/out"), target)
        decoded = stream.path_base + stream.path
        found = table.match("http", "app.test", 80, decoded)
        assert (found.path_base if found else "") == path_base, target
