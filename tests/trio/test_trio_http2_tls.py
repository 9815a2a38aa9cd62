"""HTTP/2 (h2c prior knowledge and h2 over TLS by ALPN) through the trio adapter, with curl and
h2load as the clients."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import trustme
from support import require_peer, write_certificate
from tiercel.apps.tls import CertificateFiles, TlsOptions
from trio_apps import MB, app, pattern


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [require_peer("curl"), "--silent", "--show-error", "--noproxy", "*", *args],
        capture_output=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[TlsOptions, Path]:
    pems = write_certificate(tmp_path_factory.mktemp("trio-certs"))
    return TlsOptions(default=CertificateFiles(str(pems.cert), str(pems.key))), pems.ca


@pytest.mark.peer("curl")
def test_curl_h2c_prior_knowledge_get_and_post(trio_serve):
    server = trio_serve(app)
    result = curl("--http2-prior-knowledge", "-w", "\n%{http_version}", f"{server.url}/scope")
    body, _, version = result.stdout.rpartition(b"\n")
    assert version == b"2", result
    assert json.loads(body)["http_version"] == "2"
    result = curl("--http2-prior-knowledge", "--data-binary", "abc=1", f"{server.url}/form?q")
    assert result.stdout == b"POST /form q 5\nabc=1", result


@pytest.mark.peer("curl")
def test_curl_h2c_20mb_download(trio_serve, tmp_path):
    server = trio_serve(app)
    download = tmp_path / "download.bin"
    result = curl("--http2-prior-knowledge", "-o", str(download), f"{server.url}/download?mb=20")
    assert result.returncode == 0, result
    assert download.read_bytes() == pattern(20 * MB)


@pytest.mark.peer("curl")
def test_curl_h2c_20mb_upload(trio_serve, tmp_path):
    server = trio_serve(app)
    data = pattern(20 * MB)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(data)
    result = curl(
        "--http2-prior-knowledge", "-m", "30", "--data-binary", f"@{upload}", f"{server.url}/hash"
    )
    assert result.stdout.decode() == f"{hashlib.sha256(data).hexdigest()} {len(data)}", result


def h2load(*args: str) -> dict[str, str]:
    result = subprocess.run(
        [require_peer("h2load"), *args], capture_output=True, text=True, timeout=60, check=False
    )
    out = result.stdout
    requests = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        out,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    protocol = re.search(r"Application protocol: (\S+)", out)
    assert requests and codes and protocol, out + result.stderr
    names = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    return {
        **dict(zip(names, requests.groups(), strict=True)),
        "2xx": codes.group(1),
        "protocol": protocol.group(1),
        "out": out,
    }


@pytest.mark.peer("h2load")
def test_h2load_h2c_5000_requests_16_connections_10_streams(trio_serve):
    server = trio_serve(app)
    stats = h2load("-n", "5000", "-c", "16", "-m", "10", f"{server.url}/load")
    assert stats["protocol"] == "h2c", stats["out"]
    assert (stats["succeeded"], stats["failed"], stats["errored"], stats["timeout"]) == (
        "5000",
        "0",
        "0",
        "0",
    ), stats["out"]
    assert stats["2xx"] == "5000", stats["out"]


@pytest.mark.peer("h2load")
def test_h2load_over_tls_with_bodies(trio_serve, certificate, tmp_path):
    tls, _ = certificate
    server = trio_serve(app, urls="https://127.0.0.1:0", tls=tls)
    body = tmp_path / "body.bin"
    body.write_bytes(b"b" * 20_000)  # 2.5 MB of request bodies per connection
    stats = h2load("-n", "1000", "-c", "8", "-m", "10", "-d", str(body), f"{server.url}/up")
    assert stats["protocol"] == "h2", stats["out"]
    assert (stats["succeeded"], stats["errored"], stats["2xx"]) == ("1000", "0", "1000")


@pytest.mark.peer("curl")
def test_https_h2_by_alpn_and_http11(trio_serve, certificate):
    tls, ca_pem = certificate
    server = trio_serve(app, urls="https://127.0.0.1:0", tls=tls)
    url = f"https://localhost:{server.port}"
    result = curl("--cacert", str(ca_pem), "-w", "\n%{http_version}", f"{url}/scope")
    body, _, version = result.stdout.rpartition(b"\n")
    assert version == b"2", result
    info = json.loads(body)
    assert (info["http_version"], info["scheme"]) == ("2", "https")
    result = curl("--cacert", str(ca_pem), "--http1.1", "-w", "\n%{http_version}", f"{url}/")
    assert result.stdout == b"GET /  0\n\n1.1", result
    context = ssl.create_default_context(cafile=str(ca_pem))
    with httpx.Client(verify=context, timeout=10) as client:
        data = pattern(5 * MB)
        response = client.post(f"{url}/hash", content=data)
        assert response.text == f"{hashlib.sha256(data).hexdigest()} {len(data)}"
        assert response.http_version == "HTTP/1.1"


def served_serial(port: int, ca_pem: Path) -> str:
    context = ssl.create_default_context(cafile=str(ca_pem))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return str(tls.getpeercert()["serialNumber"])


def test_certificates_changed_on_disk_are_picked_up_by_new_connections(trio_serve, tmp_path):
    """The ticker polls the certificate files every 2 s; new connections get the new pair."""
    ca = trustme.CA()
    cert, key, ca_pem = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))

    def issue(mtime: float) -> None:
        leaf = ca.issue_cert("localhost", "127.0.0.1")
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        for path in (cert, key):
            os.utime(path, (mtime, mtime))

    issue(time.time() - 100)
    tls = TlsOptions(default=CertificateFiles(str(cert), str(key)))
    server = trio_serve(app, urls="https://127.0.0.1:0", tls=tls)
    before = served_serial(server.port, ca_pem)
    issue(time.time())
    deadline = time.monotonic() + 5
    while (after := served_serial(server.port, ca_pem)) == before:
        assert time.monotonic() < deadline, "the new certificate was not picked up"
        time.sleep(0.1)
    assert after != before
