"""What an adapter drives: one engine connection per accepted transport.

``open_connection`` picks the protocol engine for a new connection. Today that is HTTP/1.1;
TLS and HTTP/2 slot in here so that adapters never change.
"""

from __future__ import annotations

from typing import Protocol

from .context import ServerContext, TransportInfo
from .events import Event
from .http1 import Http1Protocol


class EngineConnection(Protocol):
    """The adapter-facing contract. Every method is synchronous and returns quickly."""

    connection_id: str

    def receive_data(self, data: bytes, now: float) -> list[Event]: ...

    def connection_lost(self, now: float) -> list[Event]: ...

    def on_timer(self, now: float) -> list[Event]: ...

    def next_deadline(self) -> float | None: ...

    def data_to_send(self) -> bytes: ...

    def pop_events(self) -> list[Event]: ...

    @property
    def wants_read(self) -> bool: ...

    @property
    def should_close(self) -> bool: ...

    @property
    def is_idle(self) -> bool: ...

    def set_write_blocked(self, blocked: bool, now: float, buffered: int = 0) -> None: ...

    def shutdown(self, now: float) -> list[Event]: ...


def open_connection(
    context: ServerContext, transport: TransportInfo, now: float
) -> EngineConnection:
    return Http1Protocol(context, transport, now)
