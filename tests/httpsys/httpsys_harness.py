"""Helpers for the HTTP.sys tests.

``HttpSysProcess`` runs tiercel's HTTP.sys adapter in a Windows CPython: under Wine on Linux
(prepared by .ci/wine-stage), or directly on Windows. The client is always on this side: real
HTTP over 127.0.0.1 to the server process, started and stopped by its process id.
``FakeKernel`` lays out received requests the way HTTP.sys does, for the Linux tests."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tiercel.adapters.httpsys import binding as b

ROOT = Path(__file__).resolve().parents[2]
ON_WINDOWS = sys.platform == "win32"
UNDER_WINE = not ON_WINDOWS  # on Linux the Windows interpreter can only be Wine's
WINE_ENV = {
    "WINEPREFIX": os.path.join(os.environ.get("TIERCEL_WINE_CACHE", "/tmp/tiercel-wine"), "prefix"),
    "WINEDEBUG": "-all",
    "WINEDLLOVERRIDES": "mscoree,mshtml=",
}


def skip_under_wine(reason: str) -> pytest.MarkDecorator:
    """For what Wine 8's httpapi.dll / http.sys lacks; these run on Windows."""
    return pytest.mark.skipif(UNDER_WINE, reason=f"Wine 8 lacks it: {reason}")


def run_windows_python(command: list[str], *args: str, timeout: float = 60) -> str:
    """Run the Windows interpreter to completion; its output with CRLF turned into LF.

    stdin and stdout are pipes: a regular file as stdout makes it abort under Wine.
    """
    done = subprocess.run(
        [*command, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **WINE_ENV},
        timeout=timeout,
        check=False,
    )
    return done.stdout.decode("utf-8", "replace").replace("\r\n", "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HttpSysProcess:
    """``python -m tiercel.apps.cli APP --adapter httpsys ...`` in the Windows interpreter."""

    def __init__(
        self,
        command: list[str],
        app: str,
        paths: str | tuple[str, ...],
        *extra: str,
        base: str | None = None,
    ) -> None:
        """``base`` (``scheme://host:port``) is for a binding made beforehand, like an https one
        with its certificate; by default a free http port on 127.0.0.1."""
        # Wine routes by the Host header only and never answers a mismatch, so the URL names
        # the exact host the client sends.
        self.base = base.rstrip("/") if base else f"http://127.0.0.1:{free_port()}"
        self.port = int(self.base.rsplit(":", 1)[1])
        paths = (paths,) if isinstance(paths, str) else paths
        self.prefix = ";".join(f"{self.base}{path}" for path in paths)
        self.argv = [
            *command,
            "-u",
            "-m",
            "tiercel.apps.cli",
            app,
            "--adapter",
            "httpsys",
            "--urls",
            self.prefix,
            *extra,
        ]
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **WINE_ENV},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.lines.append(line)
            if "listening on" in line:
                self._listening.set()
        self._listening.set()  # ended: let the waiter see it

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 10) -> bool:
        """Whether ``text`` shows up in the output within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while text not in self.output and time.monotonic() < deadline:
            time.sleep(0.05)
        return text in self.output

    def wait_listening(self, timeout: float = 90) -> HttpSysProcess:
        self._listening.wait(timeout)
        if self.process.poll() is not None or not any("listening on" in x for x in self.lines):
            self.kill()
            pytest.fail(f"the HTTP.sys server did not start:\n{self.output}", pytrace=False)
        return self

    def wait_exit(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def interrupt(self) -> None:
        """Ctrl+C: Wine turns SIGINT into CTRL_C_EVENT for the Windows process."""
        if self.process.poll() is None:
            self.process.send_signal(signal.CTRL_C_EVENT if ON_WINDOWS else signal.SIGINT)  # type: ignore[attr-defined]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


# -- a fake kernel for the Linux tests ------------------------------------------------------------


class FakeKernel:
    """Builds one received request in a buffer, as HttpReceiveHttpRequest leaves it."""

    def __init__(
        self, size: int = 16384, buffer: ctypes.Array[ctypes.c_char] | None = None
    ) -> None:
        self.buffer = buffer if buffer is not None else ctypes.create_string_buffer(size)
        self.base = ctypes.addressof(self.buffer)
        self.used = ctypes.sizeof(b.HTTP_REQUEST_V2)
        self.request = b.HTTP_REQUEST_V2.from_buffer(self.buffer)

    def put(self, data: bytes) -> int:
        """Copy ``data`` after what is there (8-byte aligned); its address."""
        self.used = (self.used + 7) & ~7
        address = self.base + self.used
        ctypes.memmove(address, data, len(data))
        self.used += len(data)
        return address

    def receive(
        self,
        verb: str,
        raw_url: bytes,
        *,
        version: tuple[int, int] = (1, 1),
        known: dict[int, bytes] | None = None,
        unknown: list[tuple[bytes, bytes]] | None = None,
        body: list[bytes] | None = None,
        more_body: bool = False,
        remote: tuple[str, int] = ("192.0.2.7", 50123),
        local: tuple[str, int] = ("127.0.0.1", 8080),
        full_url: str = "http://localhost:8080/",
        ssl: bool = False,
        flags: int = 0,
        url_context: int = 3,
        auth: tuple[int, int, int] | None = None,  # (status, type, token)
    ) -> int:
        request = self.request
        request.RequestId, request.ConnectionId, request.UrlContext = 0xABCDEF, 77, url_context
        request.Version.MajorVersion, request.Version.MinorVersion = version
        verbs = {name: value for value, name in b.VERBS.items()}
        if verb in verbs:
            request.Verb = verbs[verb]
        else:
            request.Verb = b.HttpVerbUnknown
            request.UnknownVerbLength = len(verb)
            request.pUnknownVerb = self.put(verb.encode())
        request.RawUrlLength, request.pRawUrl = len(raw_url), self.put(raw_url)
        wide = full_url.encode("utf-16-le")
        request.CookedUrl.FullUrlLength, request.CookedUrl.pFullUrl = len(wide), self.put(wide)
        request.Address.pRemoteAddress = self.put(sockaddr(*remote))
        request.Address.pLocalAddress = self.put(sockaddr(*local))
        for index, value in (known or {}).items():
            slot = request.Headers.KnownHeaders[index]
            slot.RawValueLength, slot.pRawValue = len(value), self.put(value)
        if unknown:
            array = (b.HTTP_UNKNOWN_HEADER * len(unknown))()
            for item, (name, value) in zip(array, unknown, strict=True):
                item.NameLength, item.pName = len(name), self.put(name)
                item.RawValueLength, item.pRawValue = len(value), self.put(value)
            request.Headers.UnknownHeaderCount = len(unknown)
            request.Headers.pUnknownHeaders = self.put(bytes(array))
        if body:
            chunks = (b.HTTP_DATA_CHUNK * len(body))()
            for chunk, data in zip(chunks, body, strict=True):
                chunk.DataChunkType = b.HttpDataChunkFromMemory
                chunk.FromMemory.pBuffer, chunk.FromMemory.BufferLength = self.put(data), len(data)
            request.EntityChunkCount, request.pEntityChunks = len(body), self.put(bytes(chunks))
        request.Flags = flags | (b.HTTP_REQUEST_FLAG_MORE_ENTITY_BODY_EXISTS if more_body else 0)
        if ssl:
            request.pSslInfo = self.put(b"\0" * 64)
        if auth is not None:
            info = b.HTTP_REQUEST_AUTH_INFO()
            info.AuthStatus, info.AuthType, info.AccessToken = auth
            entry = b.HTTP_REQUEST_INFO(b.HttpRequestInfoTypeAuth, ctypes.sizeof(info))
            entry.pInfo = self.put(bytes(info))
            request.RequestInfoCount, request.pRequestInfo = 1, self.put(bytes(entry))
        return self.base


def sockaddr(host: str, port: int) -> bytes:
    address = ipaddress.ip_address(host)
    if address.version == 4:
        return struct.pack("<H", b.AF_INET) + struct.pack(">H", port) + address.packed + bytes(8)
    return (
        struct.pack("<H", b.AF_INET6) + struct.pack(">H", port) + bytes(4) + address.packed
    ) + bytes(4)
