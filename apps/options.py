"""Everything a host needs to start serving, checked up front."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tiercel.adapters.httpsys.options import HttpSysOptions, parse_url_prefixes
from tiercel.core.addresses import DEFAULT_URLS, Endpoint, parse_urls
from tiercel.core.config import EngineConfig
from tiercel.core.connection import HTTP1, HTTP2
from tiercel.core.errors import ConfigError
from tiercel.core.http2 import Http2Limits
from tiercel.core.proxy_protocol import ProxyProtocolSettings

from .logs import REJECTION_LOG_LEVELS
from .tls import TlsOptions

ADAPTERS = ("asyncio", "trio", "threads", "httpsys")
INTERFACES = ("auto", "asgi", "wsgi")
LOOPS = ("auto", "asyncio", "uvloop")
LIFESPAN_MODES = ("auto", "on", "off")
# Kestrel's HttpProtocols names, case-insensitive.
PROTOCOLS = {
    "http1": frozenset({HTTP1}),
    "http2": frozenset({HTTP2}),
    "http1andhttp2": frozenset({HTTP1, HTTP2}),
}


@dataclass(frozen=True)
class ServerOptions:
    urls: str = DEFAULT_URLS
    adapter: str = "asyncio"
    loop: str = "auto"
    engine: EngineConfig = field(default_factory=EngineConfig)
    shutdown_timeout: float = 30.0
    access_log: bool = True
    lifespan: str = "auto"
    protocols: str = "http1andhttp2"
    interface: str = "auto"  # "asgi", "wsgi", or "auto" (decided from the app when loaded)
    tls: TlsOptions | None = None
    http2: Http2Limits = field(default_factory=Http2Limits)
    endpoints: tuple[Endpoint, ...] = ()
    proxy_protocol: ProxyProtocolSettings | None = None  # PROXY v1/v2 on every listener
    # Who may send a PROXY header on an endpoint whose URL says ?proxy=required|optional when
    # proxy_protocol is None (otherwise its trusted networks apply); None means loopback.
    proxy_trusted: tuple[str, ...] | None = None
    rejection_log_level: str = "info"  # level of the tiercel.rejections lines
    httpsys: HttpSysOptions | None = None  # --adapter httpsys only (adapters/httpsys)

    def __post_init__(self) -> None:
        if self.adapter not in ADAPTERS:
            raise ConfigError(
                f"unknown adapter {self.adapter!r}; choose one of: {', '.join(ADAPTERS)}"
            )
        if self.loop not in LOOPS:
            raise ConfigError(f"unknown loop {self.loop!r}; choose one of: {', '.join(LOOPS)}")
        if self.lifespan not in LIFESPAN_MODES:
            raise ConfigError(
                f"unknown lifespan mode {self.lifespan!r}; choose one of: "
                + ", ".join(LIFESPAN_MODES)
            )
        if not self.shutdown_timeout >= 0:
            raise ConfigError(
                f"shutdown_timeout must be >= 0 seconds (got {self.shutdown_timeout})"
            )
        if self.interface not in INTERFACES:
            raise ConfigError(
                f"unknown interface {self.interface!r}; choose one of: {', '.join(INTERFACES)}"
            )
        if self.rejection_log_level not in REJECTION_LOG_LEVELS:
            raise ConfigError(
                f"unknown rejection log level {self.rejection_log_level!r}; choose one of: "
                + ", ".join(REJECTION_LOG_LEVELS)
            )
        if self.protocols.lower() not in PROTOCOLS:
            raise ConfigError(
                f"unknown protocols {self.protocols!r}; choose one of: {', '.join(PROTOCOLS)}"
            )
        if self.adapter == "httpsys":
            _check_httpsys_urls(self)
            _check_httpsys_response_cache(self)
        elif not self.endpoints:
            try:
                endpoints = parse_urls(self.urls)
            except ConfigError:
                raise
            except ValueError as exc:  # e.g. urlsplit's "Invalid IPv6 URL" for "http://[::1"
                raise ConfigError(f"invalid listen URL in {self.urls!r}: {exc}") from None
            object.__setattr__(self, "endpoints", tuple(endpoints))
        _check_proxy_trusted(self)
        if self.tls is None and any(e.scheme == "https" for e in self.endpoints):
            raise ConfigError(
                "an https:// URL needs a certificate: give --certfile (and --keyfile)"
            )

    @property
    def protocol_set(self) -> frozenset[str]:
        return PROTOCOLS[self.protocols.lower()]

    def proxy_protocol_for(self, endpoint: Endpoint | None) -> ProxyProtocolSettings | None:
        """The PROXY protocol on one endpoint: its URL's ``?proxy=``, else ``proxy_protocol``."""
        asked = endpoint.proxy if endpoint is not None else None
        if asked is None:
            return self.proxy_protocol
        if asked == "off":
            return None
        base = self.proxy_protocol
        if base is None:
            trusted = {} if self.proxy_trusted is None else {"trusted": self.proxy_trusted}
            base = ProxyProtocolSettings(**trusted)
        return replace(base, required=asked == "required")


# -- the PROXY protocol per endpoint (listen URLs with ?proxy=) -----------------------------------


def _check_proxy_trusted(options: ServerOptions) -> None:
    if options.proxy_trusted is None:
        return
    if options.proxy_protocol is None and not any(
        endpoint.proxy in ("required", "optional") for endpoint in options.endpoints
    ):
        raise ConfigError(
            "--proxy-trusted needs --proxy-protocol required|optional or a listen URL with "
            "?proxy=required|optional"
        )
    ProxyProtocolSettings(trusted=options.proxy_trusted)  # a bad network fails here, up front


# -- the HTTP.sys adapter (adapters/httpsys) -------------------------------------------------------


def _check_httpsys_urls(options: ServerOptions) -> None:
    """HTTP.sys takes URL prefixes (http://+:8080/api/), not Kestrel's listen URLs."""
    parse_url_prefixes(options.urls)
    if options.proxy_protocol is not None:
        raise ConfigError(
            "--proxy-protocol does not apply to --adapter httpsys: HTTP.sys reads the connection"
        )


def _check_httpsys_response_cache(options: ServerOptions) -> None:
    """tiercel's response cache sits in the engine, which HTTP.sys replaces: it would never run."""
    if options.engine.response_cache is not None:
        raise ConfigError(
            "--response-cache does not apply to --adapter httpsys: HTTP.sys caches responses "
            "in the kernel (on by default, off with --httpsys-no-response-cache); "
            "drop --response-cache"
        )
