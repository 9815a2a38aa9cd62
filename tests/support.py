"""Test support: a real tiercel server on a loopback port in a background thread, and helpers."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tiercel.apps.hosting import Server


class RunningServer:
    """A ``Server`` serving in its own thread and event loop. ``url`` is its first address."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        kwargs.setdefault("urls", "http://127.0.0.1:0")
        kwargs.setdefault("access_log", False)
        self.server = Server(app, **kwargs)
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.loop.run_forever()

    def start(self) -> RunningServer:
        self._thread.start()
        self._started.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._error is not None or not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop)
        future.result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    def stop_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.stop, daemon=True)
        thread.start()
        return thread

    @property
    def url(self) -> str:
        return self.server.addresses[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def connect(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return sock


def recv_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (or the timeout passes)."""
    sock.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def require_peer(name: str) -> str:
    """The path of a real outside program; skips (and CI fails on the skip) when missing."""
    path = shutil.which(name)
    if path is None:
        message = f"needs the real peer {name!r} (installed by .ci/run)"
        if os.environ.get("CI"):
            pytest.fail(message + ", but it is missing in CI", pytrace=False)
        pytest.skip(message)
    return path


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echoes method, path, query and body; used by many tests."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    summary = (
        f"{scope['method']} {scope['path']} {scope['query_string'].decode()} {len(body)}\n"
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": summary + body})


# -- test certificates -----------------------------------------------------------------------


@dataclass(frozen=True)
class PemFiles:
    """A leaf certificate (``cert``), its private key (``key``) and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path


def write_certificate(directory: Path, *names: str) -> PemFiles:
    """A new CA and a leaf for ``names`` (default: localhost and 127.0.0.1), written to
    ``cert.pem``, ``key.pem`` and ``ca.pem`` in ``directory``."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert(*(names or ("localhost", "127.0.0.1")))
    files = PemFiles(directory / "cert.pem", directory / "key.pem", directory / "ca.pem")
    leaf.cert_chain_pems[0].write_to_path(str(files.cert))
    leaf.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    return files
