"""Per-listener engine settings: which protocols, and TLS with live certificates."""

from __future__ import annotations

from tiercel.adapters.sockets import Listener
from tiercel.core.connection import HTTP1, HTTP2, EndpointSettings
from tiercel.core.tls import TlsSettings

from .options import ServerOptions
from .tls import CertificateStore


class EndpointManager:
    """Gives each listener its ``EndpointSettings`` and swaps them in on certificate reload."""

    def __init__(self, options: ServerOptions, listeners: list[Listener]) -> None:
        self.options = options
        self.listeners = listeners
        self.store: CertificateStore | None = None
        protocols = options.protocol_set
        if options.tls is not None and any(
            listener.url.startswith("https:") for listener in listeners
        ):
            alpn = [p for p in (HTTP2, HTTP1) if p in protocols]
            self.store = CertificateStore(options.tls, alpn)
        self._apply()

    def _apply(self) -> None:
        protocols = self.options.protocol_set
        for listener in self.listeners:
            tls = None
            if listener.url.startswith("https:") and self.store is not None:
                assert self.options.tls is not None
                tls = TlsSettings(self.store.default, self.options.tls.handshake_timeout)
            # A delegation queue's connections come with the client's address in the handoff
            # (already taken from any PROXY header by the front): no header to read again.
            options = self.options
            proxy = None if listener.is_queue else options.proxy_protocol_for(listener.endpoint)
            listener.settings = EndpointSettings(protocols, tls, self.options.http2, proxy)

    def reload_certificates(self) -> bool:
        if self.store is None or not self.store.reload():
            return False
        self._apply()
        return True

    def poll(self) -> None:
        """Reload when a certificate or key file changed on disk."""
        if self.store is not None and self.store.changed_on_disk():
            self.reload_certificates()
