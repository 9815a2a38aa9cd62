"""A server for real HTTP/2 peers (curl, nghttp, h2load, node, chromium): one cleartext port
(HTTP/1.1 plus prior-knowledge h2c) and one https port (ALPN h2 and http/1.1), with a
certificate from a ``trustme`` CA the peers are told to trust."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from support import RunningServer, write_certificate
from tiercel.apps.tls import CertificateFiles, TlsOptions

CHUNK = 65_536
PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>tiercel h2</title></head>
<body><h1 id="title">served by tiercel</h1>
<script>
  window.apiResult = fetch('/api?from=page', {headers: {'X-From-Page': 'yes'}})
    .then(r => r.json());
</script>
</body></html>
"""


def pattern(size: int) -> bytes:
    """``size`` deterministic bytes that are not all alike (a shifted or cut body shows)."""
    block = bytes(range(256)) * (CHUNK // 256)
    full, rest = divmod(size, CHUNK)
    return block * full + block[:rest]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def summary(scope: dict[str, Any], body: bytes) -> dict[str, Any]:
    return {
        "http_version": scope["http_version"],
        "scheme": scope["scheme"],
        "method": scope["method"],
        "path": scope["path"],
        "query_string": scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body_size": len(body),
        "body_sha256": sha256(body),
    }


async def peer_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/download?size=N`` streams N pattern bytes; ``/page`` is HTML; everything else answers
    with a JSON summary of the request (``/item/...`` with a plain-text line instead)."""
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    path = scope["path"]

    async def start(content_type: bytes, length: int | None = None) -> None:
        headers = [(b"content-type", content_type)]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})

    if path == "/download":
        size = int(parse_qs(scope["query_string"].decode())["size"][0])
        data = pattern(size)
        await start(b"application/octet-stream", size)
        view = memoryview(data)
        for offset in range(0, size, CHUNK):
            chunk = view[offset : offset + CHUNK]
            await send({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/page":
        await start(b"text/html; charset=utf-8", len(PAGE))
        await send({"type": "http.response.body", "body": PAGE})
    elif path.startswith("/item/"):
        line = f"item {path[6:]} {scope['http_version']}\n".encode()
        await start(b"text/plain")
        await send({"type": "http.response.body", "body": line})
    else:
        await start(b"application/json")
        await send(
            {"type": "http.response.body", "body": json.dumps(summary(scope, body)).encode()}
        )


@dataclass(frozen=True)
class PeerServer:
    running: RunningServer
    http: str  # http://127.0.0.1:PORT (HTTP/1.1 and h2c)
    https: str  # https://localhost:PORT (h2 and http/1.1 by ALPN)
    ca_pem: Path

    @property
    def https_port(self) -> int:
        return int(self.https.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def peer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerServer]:
    pems = write_certificate(tmp_path_factory.mktemp("peer-certs"))
    running = RunningServer(
        peer_app,
        urls="http://127.0.0.1:0;https://127.0.0.1:0",
        tls=TlsOptions(default=CertificateFiles(str(pems.cert), str(pems.key))),
    ).start()
    try:
        http, https = running.server.addresses
        port = https.rsplit(":", 1)[1]
        yield PeerServer(running, http, f"https://localhost:{port}", pems.ca)
    finally:
        # Let the server see the peers' connections close before stopping it (a stop racing
        # a client's close is tested in tests/tls).
        deadline = time.monotonic() + 3
        while running.server._impl.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        running.stop()


def run(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a peer; a failure shows its whole output."""
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
    return result
