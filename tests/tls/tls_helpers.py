"""Certificates, a reporting app and raw TLS clients for the https endpoint tests.

One session-wide PKI from ``trustme``: a CA, a default server certificate for localhost and
127.0.0.1 (RSA, so that the RSA CBC suites RFC 7540 forbids are real candidates), certificates
for the SNI names, a client certificate, and a second CA for "someone else's" certificates.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from support import RunningServer
from tiercel.apps.tls import CertificateFiles, TlsOptions
from tls_apps import scope_app

__all__ = ["scope_app"]  # re-exported for the tests

SNI_EXACT = "api.example.test"
SNI_WILDCARD = "*.wild.example.test"


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path
    serial: int
    names: tuple[str, ...]

    @property
    def files(self) -> CertificateFiles:
        return CertificateFiles(str(self.cert), str(self.key))


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    ca_pem: Path
    default: Leaf
    api: Leaf
    wild: Leaf
    client: trustme.LeafCert
    other_ca: trustme.CA
    other_ca_pem: Path
    other_default: Leaf  # same names as ``default``, issued by ``other_ca``
    stranger_client: trustme.LeafCert  # a client certificate from ``other_ca``

    def options(self, **kwargs: Any) -> TlsOptions:
        return TlsOptions(default=self.default.files, **kwargs)

    def client_context(
        self,
        alpn: Sequence[str] | None = ("h2", "http/1.1"),
        *,
        verify_hostname: bool = True,
    ) -> ssl.SSLContext:
        """A client that trusts the test CA, offering ``alpn`` (None: no ALPN at all)."""
        context = ssl.create_default_context(cafile=str(self.ca_pem))
        context.check_hostname = verify_hostname
        if alpn:
            context.set_alpn_protocols(list(alpn))
        return context


def _serial(cert: trustme.LeafCert) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()).serial_number


def write_leaf(cert: trustme.LeafCert, directory: Path, stem: str, *names: str) -> Leaf:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    # The whole chain in the certificate file, as a real deployment writes it.
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key_path.write_bytes(cert.private_key_pem.bytes())
    return Leaf(cert_path, key_path, _serial(cert), names)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA(organization_name="tiercel test CA")
    other_ca = trustme.CA(organization_name="some other CA")
    rsa = trustme.KeyType.RSA
    default = ca.issue_cert("localhost", "127.0.0.1", common_name="localhost", key_type=rsa)
    api = ca.issue_cert(SNI_EXACT, common_name=SNI_EXACT)
    wild = ca.issue_cert(SNI_WILDCARD, common_name=SNI_WILDCARD)
    other = other_ca.issue_cert("localhost", "127.0.0.1", common_name="localhost", key_type=rsa)
    ca_pem, other_ca_pem = directory / "ca.pem", directory / "other-ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    other_ca.cert_pem.write_to_path(str(other_ca_pem))
    return Pki(
        ca=ca,
        ca_pem=ca_pem,
        default=write_leaf(default, directory, "default", "localhost", "127.0.0.1"),
        api=write_leaf(api, directory, "api", SNI_EXACT),
        wild=write_leaf(wild, directory, "wild", SNI_WILDCARD),
        client=ca.issue_cert("client.example.test", common_name="client.example.test"),
        other_ca=other_ca,
        other_ca_pem=other_ca_pem,
        other_default=write_leaf(other, directory, "other", "localhost", "127.0.0.1"),
        stranger_client=other_ca.issue_cert("stranger.example.test"),
    )


# -- raw TLS clients -----------------------------------------------------------------------


def tls_connect(
    port: int,
    context: ssl.SSLContext,
    server_hostname: str | None = "localhost",
    timeout: float = 5.0,
) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return context.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def read_http1_response(sock: socket.socket) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One HTTP/1.1 response with a content-length body: (status line, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before the response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the response body")
        body += chunk
    return status, headers, body


def http1_get(sock: socket.socket, target: str = "/", host: str = "localhost") -> dict[str, Any]:
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    status, _, body = read_http1_response(sock)
    assert status.startswith(b"HTTP/1.1 200"), status
    result: dict[str, Any] = json.loads(body)
    return result


def h2_get(
    sock: socket.socket, target: str = "/", authority: str = "localhost", scheme: str = "https"
) -> dict[str, Any]:
    """One GET over HTTP/2 on an already negotiated socket, with the ``h2`` library."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(
        stream_id,
        [(":method", "GET"), (":scheme", scheme), (":authority", authority), (":path", target)],
        end_stream=True,
    )
    sock.sendall(conn.data_to_send())
    status, body = None, b""
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before the HTTP/2 response ended")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers)[b":status"]
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                raise ConnectionError(f"HTTP/2 request refused: {event}")
            elif isinstance(event, h2.events.StreamEnded):
                assert status == b"200", status
                result: dict[str, Any] = json.loads(body)
                return result
        sock.sendall(conn.data_to_send())


def client_hello(server_hostname: str | None = "localhost") -> bytes:
    """The bytes of a real TLS ClientHello, made with memory BIOs."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@pytest.fixture
def cert_dir(tmp_path: Path) -> Iterator[Path]:
    """A per-test folder for certificate files the test may overwrite."""
    directory = tmp_path / "live-certs"
    directory.mkdir()
    yield directory


# -- certificates as the client saw them, and files the tests swap -------------------------


def peer_leaf(sock: ssl.SSLSocket) -> Any:
    """The server's leaf certificate (a ``cryptography`` x509 object), verified or not."""
    from cryptography import x509

    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def peer_names(sock: ssl.SSLSocket) -> set[str]:
    from cryptography import x509

    san = peer_leaf(sock).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    names = set(san.value.get_values_for_type(x509.DNSName))
    names.update(str(ip) for ip in san.value.get_values_for_type(x509.IPAddress))
    return names


def unverified_context(alpn: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def install_leaf(leaf: Leaf, directory: Path, keep_mtime_of: Leaf | None = None) -> Leaf:
    """Copy ``leaf``'s files to ``directory/server.{pem,key}``. With ``keep_mtime_of`` set to
    the files being replaced, the modification times stay what they were, so only an explicit
    reload (not the adapter's file watcher) can pick the new ones up."""
    cert, key = directory / "server.pem", directory / "server.key"
    for source, target in ((leaf.cert, cert), (leaf.key, key)):
        # Written aside and moved into place: a watcher polling between the write and the
        # utime would otherwise see the new modification time and reload.
        staged = target.with_name(target.name + ".new")
        staged.write_bytes(source.read_bytes())
        if keep_mtime_of is not None:
            ns = target.stat().st_mtime_ns
            os.utime(staged, ns=(ns, ns))
        os.replace(staged, target)
    return Leaf(cert, key, leaf.serial, leaf.names)


@pytest.fixture
def serve(serve: Callable[..., RunningServer]) -> Iterator[Callable[..., RunningServer]]:
    """The shared ``serve``, but each server is only stopped once it has seen its clients
    leave: a stop racing a client's close is a separate test (and was a separate bug)."""
    started: list[RunningServer] = []

    def start(app: Any, **kwargs: Any) -> RunningServer:
        running = serve(app, **kwargs)
        started.append(running)
        return running

    yield start
    for running in started:
        wait_until_no_connections(running)


def wait_until_no_connections(running: RunningServer, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while running.server._impl.connections and time.monotonic() < deadline:
        time.sleep(0.01)
