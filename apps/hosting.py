"""The programmatic API: ``Server(app, urls=...)`` with ``start()``, ``serve()``, ``stop()`` and
``run()``. It picks the adapter and loop; everything else is the adapter's and the engine's."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Callable, Iterable
from typing import Any

from tiercel.core.addresses import DEFAULT_URLS
from tiercel.core.config import EngineConfig, Limits
from tiercel.core.delegation import DelegationRules
from tiercel.core.errors import ConfigError
from tiercel.core.forwarded import ForwardedOptions
from tiercel.core.proxy_protocol import ProxyProtocolSettings
from tiercel.core.response_cache import ResponseCacheSettings, parse_size

from .logs import log_rejection_summary
from .options import ServerOptions
from .tls import TlsOptions

log = logging.getLogger("tiercel.error")


def uvloop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``--loop``; None means the standard asyncio loop."""
    if loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if loop == "uvloop":
            raise ConfigError(
                "--loop uvloop: uvloop is not installed; pip install 'tiercel[uvloop]'"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


# Adapters by name: (module, class). Each class takes (app, ServerOptions) and offers
# ``run(on_started)`` (blocking, with signal handling) plus ``addresses`` and ``endpoints``.
ADAPTER_CLASSES = {
    "asyncio": ("tiercel.adapters.asyncio_adapter", "AsyncioServer", "uvloop"),
    "trio": ("tiercel.adapters.trio_adapter", "TrioServer", "trio"),
    "threads": ("tiercel.adapters.threads_adapter", "ThreadedServer", None),
    "httpsys": ("tiercel.adapters.httpsys.adapter", "HttpSysServer", None),
}


def adapter_class(name: str) -> Any:
    module_name, class_name, extra = ADAPTER_CLASSES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; pip install 'tiercel[{extra}]'" if extra and exc.name == extra else ""
        raise ConfigError(f"the {name} adapter cannot start: {exc}{hint}") from None
    return getattr(module, class_name)


def response_cache_settings(
    value: ResponseCacheSettings | int | str | None,
) -> ResponseCacheSettings | None:
    """``Server(response_cache=...)``: settings, a size in bytes, or a size like "64MiB"."""
    if value is None or isinstance(value, ResponseCacheSettings):
        return value
    if isinstance(value, str):
        return ResponseCacheSettings(max_size=parse_size(value))
    return ResponseCacheSettings(max_size=value)


def delegation_rules(value: DelegationRules | Iterable[str] | None) -> DelegationRules | None:
    """``Server(delegate=...)``: rules, or ``["/api/=/run/tiercel/api.queue", ...]``."""
    if value is None or isinstance(value, DelegationRules):
        return value
    if isinstance(value, str):
        value = [value]
    return DelegationRules.parse(value)


class Server:
    def __init__(
        self,
        app: Any,
        urls: str = DEFAULT_URLS,
        *,
        adapter: str = "asyncio",
        loop: str = "auto",
        limits: Limits | None = None,
        server_header: str | None = "tiercel",
        root_path: str = "",
        http1_codec: str = "fast",
        shutdown_timeout: float = 30.0,
        access_log: bool = True,
        lifespan: str = "auto",
        protocols: str = "http1andhttp2",
        tls: TlsOptions | None = None,
        interface: str = "auto",
        forwarded: ForwardedOptions | None = None,
        proxy_protocol: ProxyProtocolSettings | None = None,
        rejection_log_level: str = "info",
        response_cache: ResponseCacheSettings | int | str | None = None,
        delegate: DelegationRules | Iterable[str] | None = None,
        options: ServerOptions | None = None,
    ) -> None:
        self.options = options or ServerOptions(
            urls=urls,
            adapter=adapter,
            loop=loop,
            engine=EngineConfig(
                limits=limits or Limits(),
                server_header=server_header,
                root_path=root_path,
                http1_codec=http1_codec,
                forwarded=forwarded,
                response_cache=response_cache_settings(response_cache),
                delegation=delegation_rules(delegate),
            ),
            shutdown_timeout=shutdown_timeout,
            access_log=access_log,
            lifespan=lifespan,
            protocols=protocols,
            tls=tls,
            interface=interface,
            proxy_protocol=proxy_protocol,
            rejection_log_level=rejection_log_level,
        )
        self._impl: Any = adapter_class(self.options.adapter)(app, self.options)

    def reload_certificates(self) -> bool:
        """Reload the https certificates from their files (what SIGHUP does)."""
        endpoints = self._impl.endpoints
        return endpoints is not None and endpoints.reload_certificates()

    @property
    def interface(self) -> str:
        """How the app is called: "asgi" or "wsgi" (``--interface auto`` resolved)."""
        return str(getattr(self._impl, "interface", "asgi"))

    @property
    def addresses(self) -> list[str]:
        """The URLs actually bound (port 0 resolved), once started."""
        return list(self._impl.addresses)

    async def start(self) -> None:
        await self._impl.start()

    async def serve(self) -> None:
        await self._impl.serve()

    async def stop(self) -> None:
        await self._impl.stop()

    def request_stop(self) -> None:
        """Ask a serving server to stop gracefully; safe to call from a signal handler."""
        self._impl.request_stop()

    def run(self, on_started: Callable[[list[str]], None] | None = None) -> None:
        """Serve until SIGINT or SIGTERM, then stop gracefully. A second signal stops at once."""
        if self.options.adapter != "asyncio":
            # Other runtimes own their main loop and signal handling.
            self._impl.run(on_started)
        else:
            factory = uvloop_factory(self.options.loop)
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(self._run_with_signals(on_started))
        self.log_rejection_summary()

    def _on_rejection_summary_signal(self) -> None:
        self.log_rejection_summary(when_none=True)

    def log_rejection_summary(self, *, when_none: bool = False) -> None:
        """The requests refused before the app, by reason: at the end of ``run`` (when there
        were any) and on SIGUSR1 (``when_none``)."""
        context = getattr(self._impl, "context", None)  # the HTTP.sys adapter has no engine
        if context is not None:
            log_rejection_summary(context.rejection_counts(), when_none=when_none)

    async def _run_with_signals(self, on_started: Callable[[list[str]], None] | None) -> None:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        signals_seen = 0
        starting = True
        forced = False

        def on_signal() -> None:
            nonlocal signals_seen, forced
            signals_seen += 1
            if starting:
                # start() may be waiting on the app's lifespan startup, which may never end.
                log.info("stopping before start-up completed")
                forced = True
                if main is not None:
                    main.cancel()
            elif signals_seen == 1:
                log.info("shutting down (finishing requests in flight; signal again to force)")
                self.request_stop()
            else:
                log.warning("forced shutdown")
                for connection in list(self._impl.connections):
                    connection.abort()
                # stop() may be waiting on the app's lifespan shutdown, which may never end.
                forced = True
                if main is not None:
                    main.cancel()

        def on_hangup() -> None:
            endpoints = self._impl.endpoints
            if endpoints is not None and endpoints.store is not None:
                endpoints.reload_certificates()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        loop.add_signal_handler(signal.SIGUSR1, self._on_rejection_summary_signal)
        try:
            await self._impl.start()
            starting = False
            if on_started is not None:
                on_started(self.addresses)
            await self._impl.serve_started()
        except asyncio.CancelledError:
            if not forced or main is None or main.uncancel() > 0:
                raise
        finally:
            if forced:
                for listener in self._impl.listeners:
                    listener.close()  # also removes unix socket files
