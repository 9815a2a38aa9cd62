"""What an adapter drives: one engine connection per accepted transport.

``open_connection`` picks the protocol for a new connection from its endpoint's settings:
TLS endpoints let ALPN decide between HTTP/2 and HTTP/1.1; cleartext endpoints that allow both
look at the first bytes, so one port serves HTTP/1.1 and prior-knowledge h2c (the client's
connection preface is unmistakable). Adapters never see which protocol runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .context import ServerContext, TransportInfo
from .errors import ConfigError
from .events import Event
from .flush import Flush, FlushFromState
from .http1 import Http1Protocol
from .http2 import PREFACE, Http2Limits, Http2Protocol
from .proxy_protocol import ProxyProtocolConnection, ProxyProtocolSettings
from .switching import HOT_METHODS, rebind
from .tls import TlsConnection, TlsSettings

HTTP1 = "http/1.1"
HTTP2 = "h2"


class EngineConnection(Protocol):
    """The adapter-facing contract. Every method is synchronous and returns quickly."""

    connection_id: str

    def receive_data(self, data: bytes, now: float) -> list[Event]: ...

    def connection_lost(self, now: float) -> list[Event]: ...

    def on_timer(self, now: float) -> list[Event]: ...

    def next_deadline(self) -> float | None: ...

    def data_to_send(self) -> bytes: ...

    def pop_events(self) -> list[Event]: ...

    def flush(self) -> Flush:
        """All of the following at once: the events, the data, what to do with the
        transport, and the next deadline (core/flush.py)."""
        ...

    @property
    def wants_read(self) -> bool: ...

    @property
    def should_close(self) -> bool:
        """Close the transport once ``data_to_send`` is written."""
        ...

    @property
    def should_abort(self) -> bool:
        """Drop whatever is unsent and reset the transport now."""
        ...

    @property
    def is_idle(self) -> bool: ...

    def set_write_blocked(self, blocked: bool, now: float, buffered: int = 0) -> None: ...

    def shutdown(self, now: float) -> list[Event]: ...


@dataclass(frozen=True, slots=True)
class EndpointSettings:
    """Per-endpoint protocol settings (Kestrel's ListenOptions)."""

    protocols: frozenset[str] = frozenset({HTTP1, HTTP2})
    tls: TlsSettings | None = None
    http2: Http2Limits = field(default_factory=Http2Limits)
    # PROXY protocol v1/v2 before anything else (TLS included); None: off.
    proxy_protocol: ProxyProtocolSettings | None = None

    def __post_init__(self) -> None:
        unknown = self.protocols - {HTTP1, HTTP2}
        if unknown or not self.protocols:
            raise ConfigError(
                f"protocols must be a non-empty set of {HTTP1!r} and {HTTP2!r} "
                f"(got {sorted(self.protocols)})"
            )


DEFAULT_ENDPOINT = EndpointSettings()


def _by_name(
    name: str | None,
    context: ServerContext,
    transport: TransportInfo,
    now: float,
    endpoint: EndpointSettings,
) -> EngineConnection:
    if name == HTTP2 or (name is None and HTTP1 not in endpoint.protocols):
        return Http2Protocol(context, transport, now, endpoint.http2)
    # h2c Upgrade is for cleartext endpoints that speak both (ALPN decides on TLS).
    upgrade = endpoint.http2 if HTTP2 in endpoint.protocols and endpoint.tls is None else None
    return Http1Protocol(context, transport, now, h2c_upgrade=upgrade)


def open_connection(
    context: ServerContext,
    transport: TransportInfo,
    now: float,
    endpoint: EndpointSettings = DEFAULT_ENDPOINT,
) -> EngineConnection:
    if endpoint.proxy_protocol is not None:

        def after_header(info: TransportInfo, at: float) -> EngineConnection:
            return _open(context, info, at, endpoint)

        return ProxyProtocolConnection(
            context, transport, now, endpoint.proxy_protocol, after_header
        )
    return _open(context, transport, now, endpoint)


def _open(
    context: ServerContext, transport: TransportInfo, now: float, endpoint: EndpointSettings
) -> EngineConnection:
    if endpoint.tls is not None:

        def inner(alpn: str | None, info: TransportInfo, at: float) -> EngineConnection:
            return _by_name(alpn, context, info, at, endpoint)

        return TlsConnection(context, transport, now, endpoint.tls, inner)
    if endpoint.protocols == {HTTP1}:
        return Http1Protocol(context, transport, now)
    if endpoint.protocols == {HTTP2}:
        return Http2Protocol(context, transport, now, endpoint.http2)
    return PrefaceSniffer(context, transport, now, endpoint)


class PrefaceSniffer(FlushFromState):
    """Holds the first bytes of a cleartext connection until they show HTTP/2's preface or
    not, then hands everything to the chosen protocol and gets out of the way: its methods are
    rebound to the chosen protocol's, so later calls cost nothing extra."""

    def __init__(
        self,
        context: ServerContext,
        transport: TransportInfo,
        now: float,
        endpoint: EndpointSettings,
    ) -> None:
        self._context = context
        self._transport = transport
        self._endpoint = endpoint
        self._buffer = b""
        self._inner: EngineConnection | None = None
        self._deadline = now + context.config.limits.keep_alive_timeout
        self._closed = False
        self.connection_id = ""
        # The object the adapter holds (a PROXY protocol reader may stand in front of this).
        self.front: Any = self

    def _choose(self, now: float) -> EngineConnection | None:
        buffer = self._buffer
        if len(buffer) < len(PREFACE) and PREFACE.startswith(buffer):
            return None
        name = HTTP2 if buffer.startswith(PREFACE) else HTTP1
        inner = _by_name(name, self._context, self._transport, now, self._endpoint)
        self._inner = inner
        if isinstance(inner, Http1Protocol):
            inner.front = self.front  # an h2c upgrade later rebinds that object, not just inner
        rebind(self, inner, HOT_METHODS)  # the cold methods below forward to it
        if self.front is not self:
            rebind(self.front, inner)
        return inner

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if not data:
            self._closed = True
            return []
        self._buffer += data
        inner = self._choose(now)
        if inner is None:
            return []
        buffered, self._buffer = self._buffer, b""
        return inner.receive_data(buffered, now)

    def connection_lost(self, now: float) -> list[Event]:
        if self._inner is not None:
            return self._inner.connection_lost(now)
        self._closed = True
        return []

    def on_timer(self, now: float) -> list[Event]:
        if self._inner is not None:
            return self._inner.on_timer(now)
        if now >= self._deadline:
            self._closed = True
        return []

    def next_deadline(self) -> float | None:
        if self._inner is not None:
            return self._inner.next_deadline()
        return None if self._closed else self._deadline

    def data_to_send(self) -> bytes:
        return b"" if self._inner is None else self._inner.data_to_send()

    def pop_events(self) -> list[Event]:
        return [] if self._inner is None else self._inner.pop_events()

    @property
    def wants_read(self) -> bool:
        inner = self._inner
        return not self._closed if inner is None else inner.wants_read

    @property
    def should_close(self) -> bool:
        inner = self._inner
        return self._closed if inner is None else inner.should_close

    @property
    def should_abort(self) -> bool:
        inner = self._inner
        return False if inner is None else inner.should_abort

    @property
    def is_idle(self) -> bool:
        inner = self._inner
        return True if inner is None else inner.is_idle

    def set_write_blocked(self, blocked: bool, now: float, buffered: int = 0) -> None:
        if self._inner is not None:
            self._inner.set_write_blocked(blocked, now, buffered)

    def shutdown(self, now: float) -> list[Event]:
        if self._inner is not None:
            return self._inner.shutdown(now)
        self._closed = True
        return []
