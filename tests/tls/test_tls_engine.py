"""``core.tls.TlsConnection`` driven byte by byte, with no sockets and no clock: a client
``ssl.SSLObject`` on memory BIOs on one side, the engine on the other. This is where the TLS
facts the engine hands its inner protocol (``TransportInfo.tls``) are checked, since ASGI apps
do not see them."""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass, field

import pytest
from tiercel.apps.tls import CertificateStore
from tiercel.core.config import EngineConfig
from tiercel.core.connection import EndpointSettings, open_connection
from tiercel.core.context import ServerContext, TransportInfo
from tiercel.core.events import RequestReceived
from tiercel.core.http1 import Http1Protocol
from tiercel.core.tls import TlsConnection, TlsInfo, TlsSettings
from tls_helpers import SNI_EXACT, SNI_WILDCARD, Pki

ALPN = ["h2", "http/1.1"]
REMOTE = ("127.0.0.1", 50000)


@dataclass
class Pair:
    """An engine ``TlsConnection`` and a client ``SSLObject`` wired through memory BIOs."""

    engine: TlsConnection
    client: ssl.SSLObject
    client_in: ssl.MemoryBIO
    client_out: ssl.MemoryBIO
    context: ServerContext
    seen: list[TransportInfo] = field(default_factory=list)
    now: float = 100.0
    events: list[object] = field(default_factory=list)

    def pump(self, rounds: int = 10) -> None:
        for _ in range(rounds):
            with contextlib.suppress(ssl.SSLWantReadError):
                self.client.do_handshake()
            out = self.client_out.read()
            if out:
                self.events += self.engine.receive_data(out, self.now)
            back = self.engine.data_to_send()
            if back:
                self.client_in.write(back)
            if not out and not back:
                return

    @property
    def info(self) -> TlsInfo:
        assert self.seen, "the handshake did not finish"
        tls = self.seen[-1].tls
        assert tls is not None
        return tls


def make_pair(
    pki: Pki,
    store: CertificateStore,
    client: ssl.SSLContext,
    server_hostname: str | None = "localhost",
    handshake_timeout: float = 10.0,
) -> Pair:
    context = ServerContext(EngineConfig())
    seen: list[TransportInfo] = []

    def inner(alpn: str | None, info: TransportInfo, now: float) -> Http1Protocol:
        seen.append(info)
        return Http1Protocol(context, info, now)

    engine = TlsConnection(
        context,
        TransportInfo(("127.0.0.1", 443), REMOTE),
        100.0,
        TlsSettings(store.default, handshake_timeout),
        inner,
    )
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(client_in, client_out, server_hostname=server_hostname)
    return Pair(engine, client_end, client_in, client_out, context, seen)


def test_tls_info_after_the_handshake(pki):
    store = CertificateStore(pki.options(), ALPN)
    pair = make_pair(pki, store, pki.client_context(["http/1.1"]))
    pair.pump()
    transport = pair.seen[-1]
    assert transport.scheme == "https"
    assert transport.remote_address == REMOTE
    info = pair.info
    assert info.version == "TLSv1.3"
    assert info.cipher == pair.client.cipher()[0]
    assert info.alpn_protocol == "http/1.1"
    assert info.peer_certificate is None


@pytest.mark.parametrize("name", ["localhost", SNI_EXACT, "x.wild.example.test"])
def test_tls_info_has_the_sni_server_name(pki, name):
    options = pki.options(sni={SNI_EXACT: pki.api.files, SNI_WILDCARD: pki.wild.files})
    store = CertificateStore(options, ALPN)
    pair = make_pair(pki, store, pki.client_context(), server_hostname=name)
    pair.pump()
    assert pair.info.alpn_protocol == "h2"
    assert pair.info.server_name == name


def test_tls_info_without_sni_has_no_server_name(pki):
    store = CertificateStore(pki.options(), ALPN)
    client = pki.client_context(verify_hostname=False)
    pair = make_pair(pki, store, client, server_hostname=None)
    pair.pump()
    assert pair.info.server_name is None


@pytest.mark.parametrize("mode", ["allow", "require"])
def test_tls_info_has_the_client_certificate(pki, mode):
    options = pki.options(client_certificate_mode=mode, ca_certs=str(pki.ca_pem))
    store = CertificateStore(options, ALPN)
    client = pki.client_context(["http/1.1"])
    pki.client.configure_cert(client)
    pair = make_pair(pki, store, client)
    pair.pump()
    expected = ssl.PEM_cert_to_DER_cert(pki.client.cert_chain_pems[0].bytes().decode())
    assert pair.info.peer_certificate == expected


def test_request_over_the_engine(pki):
    store = CertificateStore(pki.options(), ALPN)
    pair = make_pair(pki, store, pki.client_context(["http/1.1"]))
    pair.pump()
    pair.client.write(b"GET /engine HTTP/1.1\r\nHost: localhost\r\n\r\n")
    pair.pump()
    started = [e for e in pair.events if isinstance(e, RequestReceived)]
    assert len(started) == 1
    assert started[0].stream.scheme == "https"
    assert started[0].stream.path == "/engine"


def test_handshake_deadline_is_the_only_deadline_and_closes(pki):
    store = CertificateStore(pki.options(), ALPN)
    pair = make_pair(pki, store, pki.client_context(), handshake_timeout=0.5)
    assert pair.engine.next_deadline() == pytest.approx(100.5)
    assert pair.engine.on_timer(100.4) == []
    assert not pair.engine.should_close
    pair.engine.on_timer(100.5)
    assert pair.engine.should_close
    assert pair.engine.next_deadline() is None
    assert not pair.engine.wants_read
    assert pair.context.rejections["tls_handshake_timeout"] == 1


def test_handshake_deadline_goes_away_once_done(pki):
    store = CertificateStore(pki.options(), ALPN)
    pair = make_pair(pki, store, pki.client_context(["http/1.1"]), handshake_timeout=0.5)
    pair.pump()
    assert pair.seen
    deadline = pair.engine.next_deadline()
    assert deadline is None or deadline > 100.5  # the inner protocol's keep-alive, not 100.5
    pair.engine.on_timer(100.6)
    assert not pair.engine.should_close


def test_plaintext_first_bytes_get_a_400_and_close(pki):
    store = CertificateStore(pki.options(), ALPN)
    pair = make_pair(pki, store, pki.client_context())
    assert pair.engine.receive_data(b"GET / HTTP/1.1\r\n", pair.now) == []
    out = pair.engine.data_to_send()
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert out.endswith(b"use an https:// URL\n")
    assert pair.engine.should_close
    assert pair.engine.data_to_send() == b""
    assert pair.engine.receive_data(b"more", pair.now) == []
    assert pair.context.rejections["plaintext_on_tls_port"] == 1


def test_eof_during_the_handshake_closes(pki):
    store = CertificateStore(pki.options(), ALPN)
    pair = make_pair(pki, store, pki.client_context())
    with contextlib.suppress(ssl.SSLWantReadError):
        pair.client.do_handshake()
    hello = pair.client_out.read()
    pair.engine.receive_data(hello[:20], pair.now)
    pair.engine.receive_data(b"", pair.now)
    assert pair.engine.should_close
    assert pair.engine.next_deadline() is None


def test_open_connection_uses_tls_for_tls_endpoints(pki):
    store = CertificateStore(pki.options(), ALPN)
    endpoint = EndpointSettings(tls=TlsSettings(store.default, 1.0))
    conn = open_connection(ServerContext(EngineConfig()), TransportInfo(), 0.0, endpoint)
    assert isinstance(conn, TlsConnection)
    assert conn.next_deadline() == 1.0


def test_garbage_after_the_handshake_closes_with_an_alert(pki):
    store = CertificateStore(pki.options(), ALPN)
    pair = make_pair(pki, store, pki.client_context(["http/1.1"]))
    pair.pump()
    assert pair.seen
    pair.engine.receive_data(b"\x17\x03\x03\x00\x05hello", pair.now)
    assert pair.engine.should_close
    assert not pair.engine.wants_read
    assert pair.context.rejections["tls_error"] == 1
    pair.client_in.write(pair.engine.data_to_send())
    with pytest.raises(ssl.SSLError, match="alert"):
        pair.client.read(100)


def test_close_notify_from_the_client_is_answered_in_kind(pki):
    store = CertificateStore(pki.options(), ALPN)
    pair = make_pair(pki, store, pki.client_context(["http/1.1"]))
    pair.pump()
    with contextlib.suppress(ssl.SSLWantReadError):
        pair.client.unwrap()
    pair.engine.receive_data(pair.client_out.read(), pair.now)
    pair.client_in.write(pair.engine.data_to_send())
    assert pair.engine.should_close
    assert pair.client.unwrap() is None  # the server's close_notify arrived: a clean close
