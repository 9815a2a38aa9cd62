"""The PROXY layer through ``open_connection``: what the request sees, TLS after the header,
trust, missing headers, the timeout, and the h2 paths behind it."""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

import pytest
import trustme
from pp_bytes import inet6, tlv, v2
from tiercel.core.config import EngineConfig
from tiercel.core.connection import EndpointSettings, open_connection
from tiercel.core.context import Rejection, ServerContext, TransportInfo
from tiercel.core.events import Event, RequestReceived
from tiercel.core.http2 import PREFACE
from tiercel.core.proxy_protocol import ProxyProtocolSettings
from tiercel.core.stream import HttpStream
from tiercel.core.tls import TlsSettings

LB = TransportInfo(("127.0.0.1", 8000), ("127.0.0.1", 40000))
STRANGER = TransportInfo(("10.0.0.1", 8000), ("203.0.113.9", 40000))
V1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"
GET = b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n"


class Observer:
    def __init__(self) -> None:
        self.rejections: list[Rejection] = []

    def request_rejected(self, rejection: Rejection) -> None:
        self.rejections.append(rejection)

    def response_completed(self, stream: HttpStream) -> None:
        pass


def make(
    transport: TransportInfo = LB, now: float = 0.0, **settings: Any
) -> tuple[Any, Observer, ServerContext]:
    observer = Observer()
    context = ServerContext(EngineConfig(), observer)
    tls = settings.pop("tls", None)
    protocols = settings.pop("protocols", None)
    extra: dict[str, Any] = {"tls": tls}
    if protocols is not None:
        extra["protocols"] = protocols
    endpoint = EndpointSettings(proxy_protocol=ProxyProtocolSettings(**settings), **extra)
    return open_connection(context, transport, now, endpoint), observer, context


def streams(events: list[Event]) -> list[HttpStream]:
    return [e.stream for e in events if isinstance(e, RequestReceived)]


def reasons(observer: Observer) -> list[str]:
    return [r.reason for r in observer.rejections]


def test_v1_request_sees_the_proxied_addresses() -> None:
    conn, observer, _ = make()
    assert conn.receive_data(V1[:10], 0.0) == []
    (stream,) = streams(conn.receive_data(V1[10:] + GET, 0.1))
    assert stream.remote_address == ("192.0.2.1", 56324)
    assert stream.local_address == ("198.51.100.2", 443)
    assert observer.rejections == []
    # the front now is the HTTP/1.1 engine's methods: no layer left
    assert conn.receive_data.__self__ is not conn


def test_v2_header_and_request_in_pieces() -> None:
    conn, _, _ = make(protocols=frozenset({"http/1.1"}))
    data = v2(tlvs=tlv(0x05, b"req-1")) + GET
    events: list[Event] = []
    for i in range(len(data)):
        events += conn.receive_data(data[i : i + 1], 0.0)
    (stream,) = streams(events)
    assert stream.remote_address == ("192.0.2.10", 51000)


def test_v2_inet6_and_tlvs_reach_the_transport() -> None:
    conn, _, _ = make()
    header = v2(family=2, addresses=inet6("2001:db8::1", 5, "2001:db8::2", 80), tlvs=tlv(1, b"h2"))
    (stream,) = streams(conn.receive_data(header + GET, 0.0))
    assert stream.remote_address == ("2001:db8::1", 5)
    assert stream.local_address == ("2001:db8::2", 80)
    transport: TransportInfo = conn.pop_events.__self__._transport  # the inner engine's
    proxy = transport.proxy
    assert proxy is not None and proxy.alpn == b"h2" and proxy.tlvs == {1: b"h2"}


@pytest.mark.parametrize(
    "header",
    [b"PROXY UNKNOWN\r\n", v2(command=0, family=0, proto=0, addresses=b""), v2(command=0)],
)
def test_unknown_and_local_keep_the_socket_addresses(header: bytes) -> None:
    conn, observer, _ = make()
    (stream,) = streams(conn.receive_data(header + GET, 0.0))
    assert stream.remote_address == LB.remote_address
    assert stream.local_address == LB.local_address
    assert observer.rejections == []


def test_unix_source_has_no_client_address() -> None:
    from pp_bytes import unix

    conn, _, _ = make()
    header = v2(family=3, addresses=unix(b"/run/c.sock", b"/run/s.sock"))
    (stream,) = streams(conn.receive_data(header + GET, 0.0))
    assert stream.remote_address is None
    assert stream.local_address == "/run/s.sock"


def test_untrusted_source_refused() -> None:
    conn, observer, _ = make(STRANGER, now=5.0)
    assert conn.should_close and not conn.wants_read
    assert conn.next_deadline() == 5.0  # wakes adapters that wait for a read or a timer
    assert conn.on_timer(5.0) == [] and conn.next_deadline() is None
    assert conn.receive_data(V1 + GET, 0.0) == []
    assert conn.data_to_send() == b""
    assert reasons(observer) == ["untrusted_proxy"]
    assert observer.rejections[0].remote_address == ("203.0.113.9", 40000)


def test_trusted_networks_are_configurable() -> None:
    conn, observer, _ = make(STRANGER, trusted=("203.0.113.0/24",))
    assert streams(conn.receive_data(V1 + GET, 0.0))
    mapped = TransportInfo(("::1", 1), ("::ffff:127.0.0.1", 2))
    conn, observer, _ = make(mapped)
    assert streams(conn.receive_data(V1 + GET, 0.0))
    assert observer.rejections == []


def test_missing_header_refused_when_required() -> None:
    conn, observer, _ = make()
    assert conn.receive_data(GET, 0.0) == []
    assert conn.should_close and conn.data_to_send() == b""
    assert reasons(observer) == ["proxy_header_missing"]


def test_malformed_header_refused() -> None:
    conn, observer, _ = make()
    conn.receive_data(b"PROXY TCP4 1.2.3.999 1.2.3.4 1 2\r\n" + GET, 0.0)
    assert conn.should_close and reasons(observer) == ["proxy_header_malformed"]


def test_missing_header_passes_through_when_optional() -> None:
    conn, observer, _ = make(required=False)
    (stream,) = streams(conn.receive_data(GET, 0.0))
    assert stream.remote_address == LB.remote_address
    conn, observer, _ = make(required=False)
    (stream,) = streams(conn.receive_data(V1 + GET, 0.0))
    assert stream.remote_address == ("192.0.2.1", 56324)
    assert observer.rejections == []


def test_optional_untrusted_direct_client_served_but_header_refused() -> None:
    conn, observer, _ = make(STRANGER, required=False)
    (stream,) = streams(conn.receive_data(GET, 0.0))
    assert stream.remote_address == STRANGER.remote_address
    conn, observer, _ = make(STRANGER, required=False)
    assert conn.receive_data(V1 + GET, 0.0) == []
    assert conn.should_close and reasons(observer) == ["untrusted_proxy"]


def test_timeout_closes_without_answer() -> None:
    conn, observer, _ = make(timeout=2.0, now=10.0)
    conn.receive_data(b"PROXY TCP4 ", 10.5)
    assert conn.next_deadline() == 12.0
    conn.on_timer(11.9)
    assert not conn.should_close
    conn.on_timer(12.0)
    assert conn.should_close and conn.data_to_send() == b""
    assert conn.next_deadline() is None
    assert reasons(observer) == ["proxy_header_timeout"]


def test_peer_close_before_header() -> None:
    conn, observer, _ = make()
    conn.receive_data(b"PROX", 0.0)
    conn.receive_data(b"", 0.0)
    assert conn.should_close and observer.rejections == []


def test_prior_knowledge_h2_after_header() -> None:
    conn, _, _ = make()
    conn.receive_data(V1 + PREFACE[:5], 0.0)
    conn.receive_data(PREFACE[5:], 0.0)
    assert conn.data_to_send().startswith(b"\x00")  # the server's SETTINGS frame


def test_h2c_upgrade_after_header_rebinds_the_front() -> None:
    import base64

    settings = base64.urlsafe_b64encode(b"").decode()
    request = (
        "GET / HTTP/1.1\r\nhost: a\r\nconnection: Upgrade, HTTP2-Settings\r\n"
        f"upgrade: h2c\r\nhttp2-settings: {settings}\r\n\r\n"
    ).encode()
    conn, _, _ = make()
    (stream,) = streams(conn.receive_data(V1 + request, 0.0))
    assert stream.remote_address == ("192.0.2.1", 56324)
    out = conn.data_to_send()
    assert out.startswith(b"HTTP/1.1 101")
    # the adapter's object now talks HTTP/2
    assert type(conn.receive_data.__self__).__name__ == "Http2Protocol"


# -- TLS after the header --------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def tls_client(ca: trustme.CA, alpn: str) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols([alpn])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    return context.wrap_bio(incoming, outgoing, server_hostname="localhost"), incoming, outgoing


def pump(
    conn: Any, client: ssl.SSLObject, c_in: ssl.MemoryBIO, c_out: ssl.MemoryBIO
) -> list[Event]:
    events: list[Event] = []
    for _ in range(10):
        with contextlib.suppress(ssl.SSLWantReadError):
            client.do_handshake()
        out = c_out.read()
        if out:
            events += conn.receive_data(out, 0.0)
        back = conn.data_to_send()
        if back:
            c_in.write(back)
        if not out and not back:
            break
    return events


@pytest.mark.parametrize("header", [V1, v2()])
def test_tls_after_the_header(ca: trustme.CA, header: bytes) -> None:
    conn, observer, _ = make(tls=TlsSettings(server_context(ca)))
    client, c_in, c_out = tls_client(ca, "http/1.1")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    conn.receive_data(header + c_out.read(), 0.0)  # header and ClientHello in one segment
    c_in.write(conn.data_to_send())
    pump(conn, client, c_in, c_out)
    client.write(GET)
    (stream,) = streams(pump(conn, client, c_in, c_out))
    assert stream.remote_address[0] in ("192.0.2.1", "192.0.2.10")  # type: ignore[index]
    assert observer.rejections == []
    assert client.selected_alpn_protocol() == "http/1.1"


def test_tls_header_missing_refused(ca: trustme.CA) -> None:
    conn, observer, _ = make(tls=TlsSettings(server_context(ca)))
    client, _, c_out = tls_client(ca, "h2")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    conn.receive_data(c_out.read(), 0.0)
    assert conn.should_close and reasons(observer) == ["proxy_header_missing"]


def test_tls_optional_header_passes_client_hello_through(ca: trustme.CA) -> None:
    conn, _, _ = make(tls=TlsSettings(server_context(ca)), required=False)
    client, c_in, c_out = tls_client(ca, "http/1.1")
    pump(conn, client, c_in, c_out)
    client.write(GET)
    (stream,) = streams(pump(conn, client, c_in, c_out))
    assert stream.remote_address == LB.remote_address


def test_settings_validation() -> None:
    from tiercel.core.errors import ConfigError

    with pytest.raises(ConfigError):
        ProxyProtocolSettings(trusted=("not a network",))
    with pytest.raises(ConfigError):
        ProxyProtocolSettings(versions=frozenset({3}))
    with pytest.raises(ConfigError):
        ProxyProtocolSettings(timeout=0)
    assert ProxyProtocolSettings(trusted=("10.0.0.1",)).is_trusted(("10.0.0.1", 1))
    assert not ProxyProtocolSettings().is_trusted(("10.0.0.1", 1))
    assert ProxyProtocolSettings().is_trusted(None)
