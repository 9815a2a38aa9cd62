"""The ``adapter_server`` fixture (see ``conformance_harness``) and the session's certificates."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trustme
from conformance_harness import ADAPTERS, AdapterServer, Certificates, start_server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "server_options(limits=, tls=, shutdown_timeout=): adapter_server options"
    )


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("conformance-certs")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca_pem, cert, key = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    leaf.private_key_pem.write_to_path(str(key))
    with open(cert, "wb") as out:
        for blob in leaf.cert_chain_pems:
            out.write(blob.bytes())
    return Certificates(ca, ca_pem, cert, key)


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def adapter_server(
    adapter: str, request: pytest.FixtureRequest, certificates: Certificates
) -> Iterator[AdapterServer]:
    marker = request.node.get_closest_marker("server_options")
    options = dict(marker.kwargs) if marker else {}
    server = start_server(adapter, certificates, **options)
    try:
        yield server
    finally:
        server.stop()
