"""Request delegation in the sans-IO engine: which first requests are handed over, with which
bytes and addresses; the handoff wire format; rules and queue URLs."""

from __future__ import annotations

import pytest
from tiercel.core.addresses import parse_url
from tiercel.core.config import EngineConfig
from tiercel.core.connection import HTTP1, EndpointSettings, EngineConnection, open_connection
from tiercel.core.context import ServerContext, TransportInfo
from tiercel.core.delegation import (
    DelegationRules,
    Handoff,
    HandoffError,
    decode_handoff,
    encode_handoff,
    parse_delegation_rule,
)
from tiercel.core.errors import ConfigError
from tiercel.core.events import ConnectionDelegated, Event, RequestReceived, StreamUpdated
from tiercel.core.proxy_protocol import ProxyProtocolSettings

CLIENT = ("192.0.2.10", 40000)
LOCAL = ("127.0.0.1", 8080)


def _connection(
    rules: list[str], endpoint: EndpointSettings | None = None, remote: tuple[str, int] = CLIENT
) -> tuple[ServerContext, EngineConnection]:
    context = ServerContext(EngineConfig(delegation=DelegationRules.parse(rules)))
    info = TransportInfo(local_address=LOCAL, remote_address=remote)
    return context, open_connection(context, info, 0.0, endpoint or EndpointSettings())


def _delegated(events: list[Event]) -> ConnectionDelegated:
    found = [e for e in events if isinstance(e, ConnectionDelegated)]
    assert len(found) == 1, events
    return found[0]


def test_first_request_under_the_prefix_is_handed_over_with_every_byte_read() -> None:
    _, conn = _connection(["/api/=/run/q/api.queue"])
    pieces = [
        b"POST /api/items HTTP/1.1\r\nHost: example.com\r\n",
        b"Content-Length: 10\r\n\r\n0123",
        b"GET /api/next HTTP/1.1\r\nHost: example.com\r\n\r\n",
    ]
    assert conn.receive_data(pieces[0], 0.0) == []
    event = _delegated(conn.receive_data(pieces[1], 0.0))
    assert event.queue == "/run/q/api.queue"
    assert event.handoff == Handoff(b"".join(pieces[:2]), CLIENT, LOCAL)
    # The engine reads nothing more and writes nothing: the adapter moves the socket.
    assert not conn.wants_read
    assert conn.data_to_send() == b""
    assert conn.receive_data(pieces[2], 0.0) == []


def test_pipelined_bytes_read_with_the_first_head_travel_too() -> None:
    _, conn = _connection(["/api/=/q"])
    data = b"GET /api/a HTTP/1.1\r\nHost: h\r\n\r\nGET /api/b HTTP/1.1\r\nHost: h\r\n\r\n"
    assert _delegated(conn.receive_data(data, 0.0)).handoff.data == data


def test_a_request_under_no_rule_is_served_here_and_decides_for_the_connection() -> None:
    _, conn = _connection(["/api/=/q"])
    events = conn.receive_data(b"GET /home HTTP/1.1\r\nHost: h\r\n\r\n", 0.0)
    assert [type(e) for e in events] == [RequestReceived]
    stream = events[0].stream
    stream.complete(b"ok", 0.0)
    assert conn.data_to_send().startswith(b"HTTP/1.1 200")
    # Later requests of a connection served here stay here, whatever their path.
    events = conn.pop_events() + conn.receive_data(b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n", 0.0)
    assert [type(e) for e in events if not isinstance(e, StreamUpdated)] == [RequestReceived]


def test_a_failed_handoff_is_answered_503_with_the_reason_and_closed() -> None:
    context, conn = _connection(["/api/=/q"])
    event = _delegated(conn.receive_data(b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n", 0.0))
    event.refuse("the server behind the queue /q is not running")
    out = conn.data_to_send()
    assert out.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"connection: close" in out
    assert out.endswith(b"the server behind the queue /q is not running\n")
    assert conn.should_close
    assert context.rejections["delegation_failed"] == 1


def test_rules_match_http_sys_style_on_host_port_and_path() -> None:
    rules = DelegationRules.parse(
        [
            "http://api.example:8080/=/q/api-host",
            "http://+:8080/static/=/q/static",
            "/v2/=/q/v2-any-port",
        ]
    )
    assert rules.queue_for("api.example:8080", 8080, "/anything") == "/q/api-host"
    # The strong wildcard (+) is checked before explicit hosts, as HTTP.sys does.
    assert rules.queue_for("api.example", 8080, "/static/x") == "/q/static"
    assert rules.queue_for("other.example", 8080, "/x") is None
    assert rules.queue_for("other.example", 9090, "/static/x") is None  # another port
    assert rules.queue_for("any", 9090, "/V2/list") == "/q/v2-any-port"  # paths: any case
    assert rules.queue_for("any", 9090, "/v2x") is None  # on segment boundaries only


def test_host_rules_see_the_host_header() -> None:
    _, conn = _connection(["http://api.example:8080/=/q/api"])
    served = conn.receive_data(b"GET / HTTP/1.1\r\nHost: www.example\r\n\r\n", 0.0)
    assert [type(e) for e in served] == [RequestReceived]
    _, conn = _connection(["http://api.example:8080/=/q/api"])
    event = _delegated(conn.receive_data(b"GET / HTTP/1.1\r\nHost: API.example\r\n\r\n", 0.0))
    assert event.queue == "/q/api"


def test_after_a_proxy_header_the_handoff_carries_its_client_and_no_header() -> None:
    endpoint = EndpointSettings(
        protocols=frozenset({HTTP1}), proxy_protocol=ProxyProtocolSettings()
    )
    _, conn = _connection(["/api/=/q"], endpoint, remote=("127.0.0.1", 50000))
    request = b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n"
    header = b"PROXY TCP4 203.0.113.7 198.51.100.1 51234 80\r\n"
    event = _delegated(conn.receive_data(header + request, 0.0))
    assert event.handoff.remote_address == ("203.0.113.7", 51234)
    assert event.handoff.local_address == ("198.51.100.1", 80)
    assert event.handoff.data == request


def test_without_rules_nothing_is_recorded() -> None:
    context = ServerContext(EngineConfig())
    conn = open_connection(context, TransportInfo(LOCAL, CLIENT), 0.0)
    events = conn.receive_data(b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n", 0.0)
    assert [type(e) for e in events] == [RequestReceived]


# -- the wire format -----------------------------------------------------------------------------


def test_handoff_round_trip() -> None:
    handoff = Handoff(b"GET / HTTP/1.1\r\n\r\n\x00\xff", ("::1", 443), None)
    assert decode_handoff(encode_handoff(handoff)) == handoff


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (b"", "bad magic"),
        (b"GARBAGE", "bad magic"),
        (b"TDLG\x09\x00\x00", "unsupported handoff version"),
        (b"TDLG\x01\x00\x50{}", "truncated"),
        (b"TDLG\x01\x00\x03{x}", "bad handoff metadata"),
        (b"TDLG\x01\x00\x02[]", "not an object"),
        (b'TDLG\x01\x00\x10{"remote":[1,2]}', "bad address"),
    ],
)
def test_bad_handoffs_are_refused_with_a_reason(message: bytes, why: str) -> None:
    with pytest.raises(HandoffError, match=why):
        decode_handoff(message)


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        ("/api/", "write it as URL_PREFIX=QUEUE_PATH"),
        ("=/q", "write it as URL_PREFIX=QUEUE_PATH"),
        ("https://+:443/api/=/q", "only http:// prefixes can be delegated"),
        ("/api/=relative.queue", "absolute unix socket path"),
        ("http://+:0/=/q", "port"),
    ],
)
def test_bad_rules_say_what_is_wrong(rule: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_delegation_rule(rule)


def test_a_prefix_delegated_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="registered twice"):
        DelegationRules.parse(["/api/=/q1", "/API=/q2"])


def test_queue_listen_urls() -> None:
    endpoint = parse_url("queue:/run/tiercel/api.queue?mode=0660")
    assert (endpoint.kind, endpoint.unix_path, endpoint.unix_mode) == (
        "queue",
        "/run/tiercel/api.queue",
        0o660,
    )
    for bad in ("queue:relative", "queue:", "queue:/q?tls"):
        with pytest.raises(ConfigError, match="invalid listen URL"):
            parse_url(bad)


def test_server_takes_rules_from_python() -> None:
    from tiercel.apps.hosting import Server
    from tiercel.apps.welcome import app

    server = Server(app, "http://127.0.0.1:0", delegate=["/api/=/q/api", "/admin/=/q/admin"])
    rules = server.options.engine.delegation
    assert rules is not None
    assert rules.queues == ["/q/api", "/q/admin"]
    with pytest.raises(ConfigError, match="absolute unix socket path"):
        Server(app, "http://127.0.0.1:0", delegate="/api/=relative")
