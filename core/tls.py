"""TLS inside the engine, through ``ssl.MemoryBIO``, so every adapter stays a byte pipe.

Theory of operation
-------------------
``TlsConnection`` sits between the adapter and the protocol engine. Ciphertext from the adapter
goes into the incoming BIO; while the handshake runs, ``do_handshake`` drives it (bounded by the
handshake deadline). When it completes, ALPN's choice picks the inner protocol (HTTP/2 or
HTTP/1.1), which is built with the TLS facts in its ``TransportInfo``. From then on every
plaintext byte ``SSLObject.read`` yields goes to the inner protocol, and ``data_to_send``
encrypts whatever the inner protocol produced. When the inner protocol wants the connection
closed, a close_notify goes out first.

All of the inner protocol's rules (timeouts, back-pressure, shutdown) pass through unchanged;
the only deadline added is the handshake's. A client that sends plain HTTP to a TLS port gets a
plain-text 400 saying so, never a hang.

The SSLContext is built outside the engine, because loading certificates reads files.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .context import Rejection, ServerContext, TransportInfo
from .events import Event
from .flush import ABORT, CLOSE, KEEP_READING, NO_EVENTS, Flush
from .status import reason_phrase

if TYPE_CHECKING:
    from .connection import EngineConnection

# Every TLS connection opens with a handshake record, whose first byte is 0x16.
_TLS_HANDSHAKE_RECORD = 0x16


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """What the handshake settled, for the TLS connection feature."""

    version: str | None
    cipher: str | None
    alpn_protocol: str | None
    server_name: str | None
    peer_certificate: bytes | None  # DER, when the client sent one


@dataclass(frozen=True, slots=True)
class TlsSettings:
    context: ssl.SSLContext
    handshake_timeout: float = 10.0


InnerFactory = Callable[[str | None, TransportInfo, float], "EngineConnection"]

# Server-side ``SSLObject.server_hostname`` is always None: the name a client asked for by SNI
# is only ever seen by the context's ``sni_callback``, which keeps it here for ``TlsInfo``.
_SERVER_NAME_ATTRIBUTE = "tiercel_sni_server_name"


def remember_server_name(
    ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None
) -> None:
    """Call from an ``sni_callback``: ``TlsInfo.server_name`` then reports the SNI name."""
    setattr(ssl_object, _SERVER_NAME_ATTRIBUTE, server_name)


def _plaintext_answer(context: ServerContext) -> bytes:
    body = b"400 Bad Request: this port speaks HTTPS; use an https:// URL\n"
    return b"".join(
        [
            b"HTTP/1.1 400 ",
            reason_phrase(400),
            b"\r\ndate: ",
            context.date.value,
            b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
            body,
        ]
    )


class TlsConnection:
    def __init__(
        self,
        context: ServerContext,
        transport: TransportInfo,
        now: float,
        settings: TlsSettings,
        make_inner: InnerFactory,
    ) -> None:
        self._context = context
        self._transport = transport
        self._make_inner = make_inner
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = settings.context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._handshake_deadline: float | None = now + settings.handshake_timeout
        self._inner: EngineConnection | None = None
        self._closed = False
        self._close_notify_sent = False
        self._first_bytes = True
        self._plain_out = b""
        self._shutting_down = False
        self.connection_id = context.next_connection_id()

    # -- adapter interface ----------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if self._closed:
            return []
        if self._first_bytes and data:
            self._first_bytes = False
            if data[0] != _TLS_HANDSHAKE_RECORD:
                self._refuse("plaintext_on_tls_port", "plain HTTP (not TLS) sent to a TLS port")
                self._plain_out = _plaintext_answer(self._context)
                return []
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()
        inner = self._inner
        if inner is None:
            if not self._handshake(now):
                return []
            inner = self._inner
            assert inner is not None
        events: list[Event] = []
        while True:
            try:
                plaintext = self._ssl.read(262_144)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                events += inner.receive_data(b"", now)
                break
            except ssl.SSLError as exc:
                self._refuse("tls_error", f"TLS error: {exc.reason or exc}")
                events += inner.connection_lost(now)
                break
            if not plaintext:
                events += inner.receive_data(b"", now)
                break
            events += inner.receive_data(plaintext, now)
            if not self._incoming.pending and not self._ssl.pending():
                break  # nothing left to decrypt: spare the SSLWantReadError another read raises
        if not data and self._inner is None:
            self._closed = True
        return events

    def _handshake(self, now: float) -> bool:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            if self._incoming.eof:
                self._closed = True
            return False
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            self._refuse("tls_handshake_failed", f"TLS handshake failed: {reason}")
            return False
        self._handshake_deadline = None
        ssl_object = self._ssl
        cipher = ssl_object.cipher()
        info = TlsInfo(
            version=ssl_object.version(),
            cipher=cipher[0] if cipher else None,
            alpn_protocol=ssl_object.selected_alpn_protocol(),
            server_name=getattr(ssl_object, _SERVER_NAME_ATTRIBUTE, None),
            peer_certificate=ssl_object.getpeercert(binary_form=True),
        )
        transport = replace(self._transport, scheme="https", tls=info)
        self._inner = self._make_inner(info.alpn_protocol, transport, now)
        if self._shutting_down:
            self._inner.shutdown(now)
        return True

    def _refuse(self, reason: str, message: str) -> None:
        self._closed = True
        self._context.record_rejection(
            Rejection(None, reason, message, self._transport.remote_address, self.connection_id)
        )

    def connection_lost(self, now: float) -> list[Event]:
        self._closed = True
        return self._inner.connection_lost(now) if self._inner is not None else []

    def on_timer(self, now: float) -> list[Event]:
        if self._inner is None:
            deadline = self._handshake_deadline
            if deadline is not None and now >= deadline and not self._closed:
                self._refuse("tls_handshake_timeout", "the TLS handshake did not finish in time")
            return []
        return self._inner.on_timer(now)

    def next_deadline(self) -> float | None:
        if self._closed:
            return None
        if self._inner is None:
            return self._handshake_deadline
        return self._inner.next_deadline()

    def data_to_send(self) -> bytes:
        if self._plain_out:
            out, self._plain_out = self._plain_out, b""
            return out
        inner = self._inner
        if inner is not None:
            plaintext = inner.data_to_send()
            if plaintext and not self._close_notify_sent:
                try:
                    self._ssl.write(plaintext)
                except ssl.SSLError:
                    self._closed = True
            if inner.should_close and not self._close_notify_sent:
                self._close_notify_sent = True
                with contextlib.suppress(ssl.SSLError):
                    self._ssl.unwrap()
        return self._outgoing.read()

    def pop_events(self) -> list[Event]:
        return self._inner.pop_events() if self._inner is not None else []

    def flush(self) -> Flush:
        """The inner engine's flush, with its bytes encrypted (core/flush.py)."""
        inner = self._inner
        events: Sequence[Event] = NO_EVENTS
        action = KEEP_READING
        deadline = self._handshake_deadline
        if inner is not None:
            events, plaintext, action, deadline = inner.flush()
            if action == ABORT:
                return events, b"", ABORT, None if self._closed else deadline
            if plaintext and not self._close_notify_sent:
                try:
                    self._ssl.write(
                        plaintext if isinstance(plaintext, bytes) else b"".join(plaintext)
                    )
                except ssl.SSLError:
                    self._closed = True
            if action == CLOSE and not self._close_notify_sent:
                self._close_notify_sent = True
                with contextlib.suppress(ssl.SSLError):
                    self._ssl.unwrap()
        if self._plain_out:
            data, self._plain_out = self._plain_out, b""
        else:
            data = self._outgoing.read()
        if self._closed:
            return events, data, CLOSE, None
        return events, data, action, deadline

    @property
    def wants_read(self) -> bool:
        if self._closed:
            return False
        return True if self._inner is None else self._inner.wants_read

    @property
    def should_close(self) -> bool:
        if self._closed:
            return True
        return self._inner is not None and self._inner.should_close

    @property
    def should_abort(self) -> bool:
        return self._inner is not None and self._inner.should_abort

    @property
    def is_idle(self) -> bool:
        return self._inner is None or self._inner.is_idle

    def set_write_blocked(self, blocked: bool, now: float, buffered: int = 0) -> None:
        if self._inner is not None:
            self._inner.set_write_blocked(blocked, now, buffered)

    def shutdown(self, now: float) -> list[Event]:
        self._shutting_down = True
        if self._inner is None:
            self._closed = True
            return []
        return self._inner.shutdown(now)
