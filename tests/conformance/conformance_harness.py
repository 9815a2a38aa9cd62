"""Running the conformance app on every adapter (the ``adapter_server`` fixture's side).

Each test gets a running server per adapter (asyncio, uvloop, trio, threads, selectors). Options
come from the ``server_options`` marker::

    @pytest.mark.server_options(limits=Limits(max_request_body_size=1000), tls=True)

``limits`` (a ``Limits``), ``tls`` (True: https with the session's trustme certificate) and
``shutdown_timeout`` (seconds). The yielded object has ``port``, ``url``, ``scheme``, ``stop()``
(graceful, returns when done; safe to call twice), ``supports`` (a set of capability names),
``progress`` (what the app saw) and ``adapter``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from conformance_apps import Progress, make_asgi_app, make_feature_app, make_wsgi_app
from tiercel.apps.options import ServerOptions
from tiercel.apps.tls import CertificateFiles, TlsOptions
from tiercel.core.config import EngineConfig, Limits

ADAPTERS = ["asyncio", "uvloop", "trio", "threads", "selectors"]

# What each adapter offers. A test that needs a capability an adapter lacks skips with
# ``pytest.skip(f"{adapter} does not support X")``; README.md lists every such skip.
#   h2: HTTP/2 (h2c prior knowledge; over TLS with ALPN where "tls" is there too)
#   tls: https endpoints
#   backpressure: the app's response writes wait while the client is not reading, and the
#       server stops reading the socket while the app is not reading the body
#   streaming: the app streams a response as it goes (/forever)
SUPPORTS = {
    "asyncio": {"asgi", "lifespan", "h2", "tls", "backpressure", "streaming"},
    "uvloop": {"asgi", "lifespan", "h2", "tls", "backpressure", "streaming"},
    "trio": {"asgi", "lifespan", "h2", "tls", "backpressure", "streaming"},
    "threads": {"wsgi", "h2", "tls", "backpressure", "streaming"},
    "selectors": {"feature", "h2"},
}


@dataclass(frozen=True)
class Certificates:
    ca: trustme.CA
    ca_pem: Path
    cert: Path
    key: Path

    def client_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_pem))
        if alpn:
            context.set_alpn_protocols(alpn)
        return context


class AdapterServer:
    """One running server; subclasses start and stop it on their runtime."""

    adapter = ""

    def __init__(self, progress: Progress, scheme: str) -> None:
        self.progress = progress
        self.scheme = scheme
        self.supports = set(SUPPORTS[self.adapter])
        self._stopped = False
        self._stop_lock = threading.Lock()

    @property
    def addresses(self) -> list[str]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return self.addresses[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop()

    def _stop(self) -> None:
        raise NotImplementedError

    def stop_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.stop, daemon=True)
        thread.start()
        return thread

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


class AsyncioAdapterServer(AdapterServer):
    adapter = "asyncio"

    def __init__(self, progress: Progress, options: ServerOptions, uvloop: bool) -> None:
        from tiercel.apps.hosting import Server

        self.adapter = "uvloop" if uvloop else "asyncio"
        super().__init__(progress, options.endpoints[0].scheme)
        self.server = Server(make_asgi_app(progress, asyncio.sleep), options=options)
        if uvloop:
            import uvloop as uvloop_module

            self.loop = uvloop_module.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.close()

    @property
    def addresses(self) -> list[str]:
        return self.server.addresses

    def _stop(self) -> None:
        if self._error is not None or not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)


class TrioAdapterServer(AdapterServer):
    adapter = "trio"

    def __init__(self, progress: Progress, options: ServerOptions) -> None:
        import trio
        from tiercel.adapters.trio_adapter import TrioServer

        super().__init__(progress, options.endpoints[0].scheme)
        self._trio = trio
        self.server = TrioServer(make_asgi_app(progress, trio.sleep), options)
        self.token: Any = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        trio = self._trio

        async def main() -> None:
            self.token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                await nursery.start(self.server.serve)
                self._ready.set()

        try:
            trio.run(main)
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    @property
    def addresses(self) -> list[str]:
        return self.server.addresses

    def _stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(self._trio.RunFinishedError):
                self._trio.from_thread.run_sync(self.server.request_stop, trio_token=self.token)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the trio server did not stop"


class ThreadsAdapterServer(AdapterServer):
    adapter = "threads"

    def __init__(self, progress: Progress, options: ServerOptions) -> None:
        from tiercel.adapters.threads_adapter import ThreadedServer

        super().__init__(progress, options.endpoints[0].scheme)
        self.server = ThreadedServer(make_wsgi_app(progress), options, threads=4)
        self.server.start_serving()

    @property
    def addresses(self) -> list[str]:
        return self.server.addresses

    def _stop(self) -> None:
        self.server.stop_serving()


class SelectorsAdapterServer(AdapterServer):
    adapter = "selectors"

    def __init__(self, progress: Progress, limits: Limits) -> None:
        from tiercel.apps.selectors_server import SelectorsServer

        super().__init__(progress, "http")
        self.server = SelectorsServer(make_feature_app(progress), "127.0.0.1", 0, limits=limits)
        self.server.bind()
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def addresses(self) -> list[str]:
        return self.server.context.addresses.addresses

    def _stop(self) -> None:
        self.server.stop()
        self._thread.join(30)
        assert not self._thread.is_alive(), "serve_forever did not return after stop()"


def start_server(
    adapter: str,
    certificates: Certificates | None,
    *,
    limits: Limits | None = None,
    tls: bool = False,
    shutdown_timeout: float = 10.0,
) -> AdapterServer:
    progress = Progress()
    limits = limits or Limits()
    if adapter == "selectors":
        if tls:
            pytest.skip("selectors does not support TLS (the example is cleartext only)")
        return SelectorsAdapterServer(progress, limits)
    tls_options = None
    if tls:
        assert certificates is not None
        tls_options = TlsOptions(
            default=CertificateFiles(str(certificates.cert), str(certificates.key))
        )
    options = ServerOptions(
        urls=f"{'https' if tls else 'http'}://127.0.0.1:0",
        adapter="asyncio" if adapter == "uvloop" else adapter,
        loop="uvloop" if adapter == "uvloop" else "asyncio",
        engine=EngineConfig(limits=limits),
        shutdown_timeout=shutdown_timeout,
        access_log=False,
        interface="wsgi" if adapter == "threads" else "asgi",
        tls=tls_options,
    )
    if adapter in ("asyncio", "uvloop"):
        return AsyncioAdapterServer(progress, options, uvloop=adapter == "uvloop")
    if adapter == "trio":
        return TrioAdapterServer(progress, options)
    if adapter == "threads":
        return ThreadsAdapterServer(progress, options)
    raise ValueError(adapter)
