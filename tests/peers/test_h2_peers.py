"""HTTP/2 against real, independent peers: curl, nghttp and h2load (nghttp2), node's http2
module (nghttp2 again, but a different client), and Debian's chromium driven by Playwright.

httpx and the ``h2`` library are not independent of the engine (it uses ``h2`` too), so the
interoperability claims rest on these. Each test starts nothing but its peer; the server is
shared by the module (``peer_server``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from peers_helpers import PeerServer, pattern, run, sha256
from support import require_peer

# -- curl ----------------------------------------------------------------------------------


def curl(*args: str | Path) -> tuple[str, str]:
    """(body, http_version) of one curl transfer."""
    result = run(require_peer("curl"), "-sS", "--fail", "-w", "\n%{http_version}", *args)
    body, _, version = result.stdout.rpartition("\n")
    return body, version


@pytest.mark.peer("curl")
def test_curl_h2c_prior_knowledge(peer_server: PeerServer):
    body, version = curl("--http2-prior-knowledge", f"{peer_server.http}/curl?x=1")
    assert version == "2"
    seen = json.loads(body)
    assert seen["http_version"] == "2"
    assert seen["scheme"] == "http"
    assert seen["query_string"] == "x=1"


@pytest.mark.peer("curl")
def test_curl_h2_over_tls(peer_server: PeerServer):
    body, version = curl("--http2", "--cacert", peer_server.ca_pem, f"{peer_server.https}/tls")
    assert version == "2"
    assert json.loads(body)["http_version"] == "2"
    assert json.loads(body)["scheme"] == "https"


@pytest.mark.peer("curl")
def test_curl_http11_over_tls(peer_server: PeerServer):
    body, version = curl("--http1.1", "--cacert", peer_server.ca_pem, f"{peer_server.https}/h1")
    assert version == "1.1"
    assert json.loads(body)["http_version"] == "1.1"


@pytest.mark.peer("curl")
def test_curl_http11_on_the_shared_cleartext_port(peer_server: PeerServer):
    """``--http1.1`` on the shared cleartext port: the preface sniffing picks HTTP/1.1."""
    body, version = curl("--http1.1", f"{peer_server.http}/plain")
    assert version == "1.1"
    assert json.loads(body)["http_version"] == "1.1"


@pytest.mark.peer("curl")
def test_curl_h2c_upgrade(peer_server: PeerServer):
    """``--http2`` on cleartext sends ``Upgrade: h2c``; the answer comes over HTTP/2."""
    body, version = curl("--http2", f"{peer_server.http}/upgrade?u=1")
    assert version == "2"
    seen = json.loads(body)
    assert seen["http_version"] == "2"
    assert seen["query_string"] == "u=1"


def upload_with_curl(peer_server: PeerServer, tmp_path: Path, transport: str, size: int) -> None:
    data = pattern(size)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(data)
    tls = ["--cacert", str(peer_server.ca_pem), f"{peer_server.https}/upload"]
    how = {
        "h2c": ["--http2-prior-knowledge", f"{peer_server.http}/upload"],
        "h2": ["--http2", *tls],
        "http1.1-tls": ["--http1.1", *tls],  # curl sends Expect: 100-continue for this size
    }[transport]
    body, version = curl("--max-time", "20", "--data-binary", f"@{upload}", *how)
    assert version == ("1.1" if transport == "http1.1-tls" else "2")
    seen = json.loads(body)
    assert seen["method"] == "POST"
    assert seen["body_size"] == len(data)
    assert seen["body_sha256"] == sha256(data)


@pytest.mark.peer("curl")
@pytest.mark.parametrize("transport", ["h2c", "h2", "http1.1-tls"])
def test_curl_2mb_upload(peer_server: PeerServer, tmp_path, transport):
    upload_with_curl(peer_server, tmp_path, transport, 2 * 1024 * 1024 + 17)


@pytest.mark.peer("curl")
@pytest.mark.parametrize("transport", ["h2c", "h2"])
def test_curl_8mb_upload_over_h2(peer_server: PeerServer, tmp_path, transport):
    """Well past the 1 MB connection window: the connection window must keep re-opening
    (it once stopped after ~2.3 MB, when each connection credit was counted twice)."""
    upload_with_curl(peer_server, tmp_path, transport, 8 * 1024 * 1024)


@pytest.mark.peer("curl")
def test_curl_8mb_upload_over_http11(peer_server: PeerServer, tmp_path):
    upload_with_curl(peer_server, tmp_path, "http1.1-tls", 8 * 1024 * 1024)


@pytest.mark.peer("curl")
@pytest.mark.parametrize("transport", ["h2c", "h2"])
def test_curl_5mb_download_over_h2(peer_server: PeerServer, tmp_path, transport):
    size = 5 * 1024 * 1024 + 3
    target = tmp_path / "download.bin"
    if transport == "h2c":
        how = ["--http2-prior-knowledge", f"{peer_server.http}/download?size={size}"]
    else:
        how = [
            "--http2",
            "--cacert",
            str(peer_server.ca_pem),
            f"{peer_server.https}/download?size={size}",
        ]
    _, version = curl("-o", target, *how)
    assert version == "2"
    data = target.read_bytes()
    assert len(data) == size
    assert sha256(data) == sha256(pattern(size))


@pytest.mark.peer("curl")
def test_curl_plain_http_to_the_https_port(peer_server: PeerServer):
    result = subprocess.run(
        [
            require_peer("curl"),
            "-sS",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code}",
            f"http://127.0.0.1:{peer_server.https_port}/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    body, _, code = result.stdout.rpartition("\n")
    assert code == "400"
    assert "this port speaks HTTPS" in body


@pytest.mark.peer("curl")
def test_curl_https_to_the_plaintext_port_fails_fast(peer_server: PeerServer):
    port = peer_server.http.rsplit(":", 1)[1]
    started = time.monotonic()
    result = subprocess.run(
        [require_peer("curl"), "-sS", "--max-time", "10", f"https://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 35, (result.returncode, result.stderr)  # SSL connect error
    assert time.monotonic() - started < 5


# -- nghttp --------------------------------------------------------------------------------


@pytest.mark.peer("nghttp")
def test_nghttp_h2c_prior_knowledge(peer_server: PeerServer):
    result = run(require_peer("nghttp"), "-nv", f"{peer_server.http}/")
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", result.stdout), result.stdout
    assert "recv GOAWAY" not in result.stdout  # the client ends the connection, not us


@pytest.mark.peer("nghttp")
def test_nghttp_h2c_upgrade(peer_server: PeerServer):
    result = run(require_peer("nghttp"), "-nvu", f"{peer_server.http}/")
    assert "HTTP Upgrade response" in result.stdout, result.stdout
    assert "HTTP Upgrade success" in result.stdout, result.stdout
    assert re.search(r"recv \(stream_id=1\) :status: 200", result.stdout), result.stdout


@pytest.mark.peer("nghttp")
def test_nghttp_over_tls_negotiates_h2(peer_server: PeerServer):
    result = run(require_peer("nghttp"), "-nsv", f"{peer_server.https}/")
    assert "The negotiated protocol: h2" in result.stdout, result.stdout
    assert re.search(r"^\s*\d+\s+\S+\s+\S+\s+\S+\s+200\s", result.stdout, re.M), result.stdout


@pytest.mark.peer("nghttp")
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_nghttp_20_concurrent_streams(peer_server: PeerServer, scheme):
    url = f"{peer_server.http if scheme == 'http' else peer_server.https}/item/x"
    result = run(require_peer("nghttp"), "-nv", "-m", "20", url)
    statuses = re.findall(r"recv \(stream_id=(\d+)\) :status: (\d+)", result.stdout)
    assert len(statuses) == 20, result.stdout[-2000:]
    assert {status for _, status in statuses} == {"200"}
    assert len({stream for stream, _ in statuses}) == 20  # 20 streams on one connection
    assert result.stdout.count("Connected") == 1


# -- h2load --------------------------------------------------------------------------------


@pytest.mark.peer("h2load")
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_h2load(peer_server: PeerServer, scheme):
    url = f"{peer_server.http if scheme == 'http' else peer_server.https}/item/load"
    result = run(require_peer("h2load"), "-n", "2000", "-c", "4", "-m", "10", url, timeout=120)
    out = result.stdout
    assert f"Application protocol: {'h2c' if scheme == 'http' else 'h2'}" in out, out
    requests = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        out,
    )
    assert requests, out
    assert requests.groups() == ("2000", "2000", "2000", "2000", "0", "0", "0"), out
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert codes, out
    assert codes.groups() == ("2000", "0", "0", "0"), out


# -- node's http2 module -------------------------------------------------------------------

NODE_SCRIPT = r"""
// node h2many.js URL COUNT UPLOAD_BYTES [CA_PEM]: COUNT concurrent requests on one session;
// GET /item/i when UPLOAD_BYTES is 0, else POST /upload/i with that many bytes.
const http2 = require('http2');
const fs = require('fs');
const [url, count, upload, caPath] = [
  process.argv[2], Number(process.argv[3]), Number(process.argv[4]), process.argv[5]];
const session = http2.connect(url, caPath ? { ca: fs.readFileSync(caPath) } : {});
session.on('error', (e) => { console.error('session error', e); process.exit(3); });
const one = (i) => new Promise((resolve, reject) => {
  const headers = upload
    ? { ':method': 'POST', ':path': `/upload/${i}` }
    : { ':path': `/item/${i}`, 'x-index': String(i) };
  const req = session.request(headers);
  let status = 0;
  const chunks = [];
  req.on('response', (h) => { status = h[':status']; });
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => resolve({ i, status, body: Buffer.concat(chunks).toString() }));
  req.on('error', reject);
  req.end(upload ? Buffer.alloc(upload, 65 + (i % 26)) : undefined);
});
const timer = setTimeout(() => { console.error('timed out'); process.exit(5); }, 30000);
Promise.all([...Array(count).keys()].map(one)).then((results) => {
  console.log(JSON.stringify({ alpn: session.alpnProtocol, results }));
  clearTimeout(timer);
  session.close();
}).catch((e) => { console.error('request error', e); process.exit(4); });
"""


def run_node_script(
    peer_server: PeerServer, tmp_path: Path, scheme: str, count: int, upload: int = 0
) -> list[dict[str, Any]]:
    script = tmp_path / "h2many.js"
    script.write_text(NODE_SCRIPT)
    if scheme == "http":
        args = [peer_server.http, str(count), str(upload)]
    else:  # rejectUnauthorized stays on: the server's chain must verify against the CA
        args = [peer_server.https, str(count), str(upload), str(peer_server.ca_pem)]
    result = run(require_peer("node"), script, *args)
    report = json.loads(result.stdout)
    assert report["alpn"] == ("h2c" if scheme == "http" else "h2")
    results: list[dict[str, Any]] = sorted(report["results"], key=lambda r: r["i"])
    assert [r["status"] for r in results] == [200] * count
    return results


@pytest.mark.peer("node")
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_node_http2_20_concurrent_requests(peer_server: PeerServer, tmp_path, scheme):
    results = run_node_script(peer_server, tmp_path, scheme, 20)
    assert [r["body"] for r in results] == [f"item {i} 2\n" for i in range(20)]


@pytest.mark.peer("node")
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_node_http2_20_concurrent_uploads(peer_server: PeerServer, tmp_path, scheme):
    """20 streams of 256 KiB each share one connection window (5 MiB in all)."""
    size = 256 * 1024
    results = run_node_script(peer_server, tmp_path, scheme, 20, upload=size)
    for i, result in enumerate(results):
        seen = json.loads(result["body"])
        assert seen["path"] == f"/upload/{i}"
        assert seen["body_size"] == size
        assert seen["body_sha256"] == sha256(bytes([65 + i % 26]) * size)


# -- chromium through Playwright -----------------------------------------------------------

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.mark.peer("chromium")
@pytest.mark.timeout(60)
def test_chromium_loads_a_page_over_h2_and_fetches(peer_server: PeerServer):
    chromium = require_peer("chromium")
    try:
        from playwright import sync_api
    except ImportError:
        message = "needs the Python package playwright (pip install playwright)"
        if os.environ.get("CI"):
            pytest.fail(message + ", but it is missing in CI", pytrace=False)
        pytest.skip(message)
    url = f"https://127.0.0.1:{peer_server.https_port}"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(ignore_https_errors=True)
            page = context.new_page()
            page.set_default_timeout(10_000)
            response = page.goto(f"{url}/page")
            assert response is not None
            assert response.status == 200
            assert page.text_content("#title") == "served by tiercel"
            protocol = page.evaluate(
                "performance.getEntriesByType('navigation')[0].nextHopProtocol"
            )
            assert protocol == "h2"
            seen = page.evaluate("window.apiResult")
            assert seen["http_version"] == "2"
            assert seen["scheme"] == "https"
            assert seen["path"] == "/api"
            assert seen["query_string"] == "from=page"
            assert ["x-from-page", "yes"] in seen["headers"]
            posted = page.evaluate(
                """fetch('/echo', {method: 'POST', body: 'x'.repeat(100000)})
                   .then(r => r.json())"""
            )
            assert posted["method"] == "POST"
            assert posted["body_size"] == 100_000
            assert posted["http_version"] == "2"
            many = page.evaluate(
                """Promise.all([...Array(30).keys()].map(
                     i => fetch('/item/' + i).then(r => r.text())))"""
            )
            assert many == [f"item {i} 2\n" for i in range(30)]
        finally:
            browser.close()


# -- what the app sees of an HTTP/2 request ------------------------------------------------


@pytest.mark.peer("curl")
@pytest.mark.parametrize("transport", ["h2c", "h2"])
def test_http2_scope(peer_server: PeerServer, transport):
    if transport == "h2c":
        base, how = peer_server.http, ["--http2-prior-knowledge"]
    else:
        base, how = peer_server.https, ["--http2", "--cacert", str(peer_server.ca_pem)]
    body, version = curl(
        *how,
        "-X",
        "PUT",
        "-H",
        "X-Mixed-Case: Some Value",
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        "hello",
        f"{base}/scope/a%20b/c?q=1&empty=&q=2",
    )
    assert version == "2"
    seen = json.loads(body)
    assert seen["http_version"] == "2"
    assert seen["method"] == "PUT"
    assert seen["path"] == "/scope/a b/c"
    assert seen["query_string"] == "q=1&empty=&q=2"
    assert seen["body_size"] == 5
    headers = seen["headers"]
    assert all(name == name.lower() and not name.startswith(":") for name, _ in headers)
    assert ["x-mixed-case", "Some Value"] in headers
    assert ["content-type", "text/plain"] in headers
    authority = base.split("://", 1)[1]
    assert [name for name, _ in headers].count("host") == 1
    assert ["host", authority] in headers


@pytest.mark.peer("node")
def test_http2_scope_from_node_authority_becomes_host(peer_server: PeerServer, tmp_path):
    script = tmp_path / "scope.js"
    script.write_text(
        """
const http2 = require('http2');
const s = http2.connect(process.argv[2]);
const r = s.request({':method': 'DELETE', ':path': '/scope?x=y', ':authority': 'example.test:8443',
                     'Accept': 'application/json'});
let d = '';
r.on('data', (c) => d += c);
r.on('end', () => { console.log(d); s.close(); });
r.end();
"""
    )
    seen = json.loads(run(require_peer("node"), script, peer_server.http).stdout)
    assert seen["http_version"] == "2"
    assert seen["method"] == "DELETE"
    assert seen["path"] == "/scope"
    assert seen["query_string"] == "x=y"
    assert ["host", "example.test:8443"] in seen["headers"]
    assert ["accept", "application/json"] in seen["headers"]
