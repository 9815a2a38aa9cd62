"""Server-wide state shared by every connection engine: config, the Date header, counters,
the addresses feature, and the observer the host plugs its logging into.

The engine calls the observer synchronously; the observer must not block (a host that writes
logs to slow sinks should queue them).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .config import EngineConfig
from .dates import HttpDate
from .http1_fast import CACHED_HEADS, RequestHeads
from .response_cache import ResponseCache

if TYPE_CHECKING:
    from .proxy_protocol import ProxyHeader
    from .stream import HttpStream
    from .tls import TlsInfo


@dataclass(frozen=True, slots=True)
class TransportInfo:
    """What the adapter knows about one accepted connection."""

    local_address: tuple[str, int] | str | None = None
    remote_address: tuple[str, int] | None = None
    scheme: str = "http"
    tls: TlsInfo | None = None
    proxy: ProxyHeader | None = None  # the PROXY protocol header, TLVs included, when one came
    # The adapter can write a file range to this transport as it is (conn.file_to_send()).
    sendfile: bool = False


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request the engine refused before or instead of the app (for telemetry)."""

    status: int | None  # None when the connection was closed without a response
    reason: str
    message: str
    remote_address: tuple[str, int] | None
    connection_id: str


class EngineObserver(Protocol):
    def request_rejected(self, rejection: Rejection) -> None: ...

    def response_completed(self, stream: HttpStream) -> None: ...


class _NullObserver:
    def request_rejected(self, rejection: Rejection) -> None:
        pass

    def response_completed(self, stream: HttpStream) -> None:
        pass


@dataclass
class ServerAddresses:
    """The addresses feature: the URLs actually bound, filled in by the adapter after start."""

    addresses: list[str] = field(default_factory=list)


class ServerContext:
    def __init__(
        self,
        config: EngineConfig | None = None,
        observer: EngineObserver | None = None,
        wall_time: float = 0.0,
    ) -> None:
        self.config = config or EngineConfig()
        self.observer: EngineObserver = observer or _NullObserver()
        self.date = HttpDate(wall_time)
        self.wall_time = wall_time
        self.addresses = ServerAddresses()
        self.rejections: Counter[str] = Counter()
        # Response cache: hits, misses, stores, evictions, expirations. The cache itself is
        # None when off, which is the one check a request pays for it.
        self.response_cache_counters: Counter[str] = Counter()
        cache_settings = self.config.response_cache
        self.response_cache = (
            None
            if cache_settings is None
            else ResponseCache(cache_settings, self.response_cache_counters)
        )
        # Direct file transmission: files and bytes written raw by the adapter ("sendfile_*")
        # or read into the engine because the transport needs it ("read_loop_*").
        self.file_counters: Counter[str] = Counter()
        # HTTP/1.1 request heads seen before, by their bytes (core/http1_fast.py).
        self.request_heads = RequestHeads(CACHED_HEADS)
        self.open_connections = 0
        self._ids = itertools.count(1)
        server_header = self.config.server_header
        self.server_header = server_header.encode("ascii") if server_header else None
        # The Date and Server lines most HTTP/1.1 responses carry, serialised once a second.
        self._engine_lines = b""
        self._engine_lines_date = b""

    def engine_lines(self, has_date: bool, has_server: bool) -> bytes:
        """The engine's own header lines for an HTTP/1.1 response head: Date and Server,
        each unless the app set it (or, for Server, the server sends none)."""
        if has_date or has_server:
            return self._lines(not has_date, not has_server)
        date = self.date.value
        if date is not self._engine_lines_date:  # a new second (tick)
            self._engine_lines = self._lines(True, True)
            self._engine_lines_date = date
        return self._engine_lines

    def _lines(self, date: bool, server: bool) -> bytes:
        lines = b"date: " + self.date.value + b"\r\n" if date else b""
        if server and self.server_header:
            lines += b"server: " + self.server_header + b"\r\n"
        return lines

    def tick(self, wall_time: float) -> None:
        """Called by the host about once a second with the wall-clock time."""
        self.wall_time = wall_time
        self.date.refresh(wall_time)

    def next_connection_id(self) -> str:
        return f"{next(self._ids):x}"

    def try_open_connection(self) -> bool:
        """Count a new connection; False means the connection limit is reached: close it."""
        limit = self.config.limits.max_concurrent_connections
        if limit is not None and self.open_connections >= limit:
            self.rejections["connection_limit"] += 1
            return False
        self.open_connections += 1
        return True

    def connection_closed(self) -> None:
        self.open_connections -= 1

    def record_rejection(self, rejection: Rejection) -> None:
        self.rejections[rejection.reason] += 1
        self.observer.request_rejected(rejection)

    def rejection_counts(self) -> dict[str, int]:
        """A snapshot of ``rejections`` (requests refused before the app, by reason)."""
        return dict(self.rejections)
