"""A server-side response cache with the rules of HTTP.sys's kernel-mode cache.

Theory of operation
-------------------
The cache sits between a protocol (HTTP/1.1 or HTTP/2) and the app. When a protocol has parsed a
request it would hand to the app, it first calls ``ResponseCache.try_serve(stream, now)``:

* a request the cache may answer (GET or HEAD, no body, no Authorization, no Range, no
  conditional or Expect header) whose key (scheme, host, path, query) has a fresh entry is
  answered at once from the entry, with an ``Age`` header, and the app never runs (a *hit*);
* a cacheable GET without a fresh entry (a *miss*) runs the app as usual, but a recorder is put
  between the stream and its protocol: it forwards every response operation unchanged and keeps
  a copy of the body. When the response completes and meets the response rules (status 200,
  ``Cache-Control: public`` with ``s-maxage``/``max-age``, or an ``Expires`` date; no
  ``Set-Cookie``, ``Vary`` or ``Pragma``; no trailers; at most ``max_entry_size`` bytes), it is
  stored. The recorder takes itself out again as soon as it knows the response will not be
  stored, so a large download pays nothing after its first chunk;
* anything else passes through untouched.

HEAD is answered from the entry a GET stored; a HEAD never stores one (its body is not sent).
Like HTTP.sys, the cache does not look at the request's own ``Cache-Control`` or ``Pragma``: a
browser's reload is answered from the cache until the entry expires.

Time is the adapter's monotonic clock, the ``now`` it passes into every engine call (the
stream's ``start_time``): an entry lives for its max-age from the moment it was stored.
``Expires`` is a wall-clock date, so it is turned into a lifetime against the response's
``Date`` (or the server's wall time) once, when the entry is stored.

Memory is bounded: every entry is charged for its body, its headers and its key, and the least
recently used entries are evicted when a new one would exceed ``max_size``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .files import FileSegment
    from .stream import HttpStream, StreamOwner

Headers = list[tuple[bytes, bytes]]
CacheKey = tuple[str, bytes, str, bytes]

DEFAULT_MAX_ENTRY_SIZE = 262_144  # HTTP.sys's UriMaxUriBytes default: 256 KB
# What an entry costs beyond its bytes (the objects holding it), so many tiny entries are
# still bounded by max_size.
_ENTRY_OVERHEAD = 256

# Request headers that keep a request away from the cache (HTTP.sys's request conditions, plus
# the conditional headers: the app, not the cache, decides on 304s).
_BYPASS_REQUEST_HEADERS = frozenset(
    {
        b"authorization",
        b"range",
        b"if-range",
        b"expect",
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
    }
)
# Response headers that forbid storing (HTTP.sys never caches a response with them).
_NEVER_STORE = frozenset({b"set-cookie", b"vary", b"pragma"})
# Response headers not stored: the engine writes its own (Date, Server) or they describe one
# connection or one delivery.
_NOT_STORED = frozenset(
    {b"date", b"server", b"age", b"connection", b"keep-alive", b"transfer-encoding"}
)
_DEFAULT_PORTS = {"http": b":80", "https": b":443"}


@dataclass(frozen=True, slots=True)
class ResponseCacheSettings:
    """``max_size``: total bytes for every entry; ``max_entry_size``: the largest response
    body stored (HTTP.sys's default is 256 KB)."""

    max_size: int
    max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE

    def __post_init__(self) -> None:
        for name in ("max_size", "max_entry_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(
                    f"response cache {name} must be a positive number of bytes (got {value!r}), "
                    "e.g. 64MiB"
                )


def parse_size(text: str) -> int:
    """``64MiB``, ``512KiB``, ``1GB``, ``65536`` -> bytes (for the command line)."""
    units = {
        "": 1,
        "b": 1,
        "k": 1000,
        "kb": 1000,
        "kib": 1024,
        "m": 1000**2,
        "mb": 1000**2,
        "mib": 1024**2,
        "g": 1000**3,
        "gb": 1000**3,
        "gib": 1024**3,
    }
    stripped = text.strip()
    digits = stripped.rstrip("bBkKmMgGiI ")
    unit = stripped[len(digits) :].strip().lower()
    try:
        number = float(digits)
    except ValueError:
        number = -1.0
    if unit not in units or not number > 0:
        raise ConfigError(
            f"{text!r} is not a size; write a positive number of bytes with an optional unit "
            "(KiB, MiB, GiB, KB, MB, GB), e.g. 64MiB"
        )
    return int(number * units[unit])


@dataclass(slots=True)
class CachedResponse:
    status: int
    reason: str | None
    headers: Headers
    body: bytes
    stored_at: float
    expires_at: float
    size: int


def _directive_seconds(directives: list[bytes], name: bytes) -> int | None:
    for directive in directives:
        key, _, value = directive.partition(b"=")
        if key.strip() == name:
            try:
                return int(value.strip().strip(b'"'))
            except ValueError:
                return None
    return None


def response_lifetime(headers: Headers, wall_time: float) -> float | None:
    """Seconds a response may be served from the cache, or None when it must not be stored."""
    cache_control: list[bytes] = []
    expires = date = None
    for name, value in headers:
        lowered = name.lower()
        if lowered in _NEVER_STORE:
            return None
        if lowered == b"cache-control":
            cache_control += [d.strip().lower() for d in value.split(b",")]
        elif lowered == b"expires":
            expires = value
        elif lowered == b"date":
            date = value
    if any(d in (b"no-store", b"no-cache", b"private") for d in cache_control):
        return None
    if b"public" in cache_control:
        seconds = _directive_seconds(cache_control, b"s-maxage")
        if seconds is None:
            seconds = _directive_seconds(cache_control, b"max-age")
        if seconds is not None:
            return float(seconds) if seconds > 0 else None
    if expires is None:
        return None
    try:
        expires_at = parsedate_to_datetime(expires.decode("latin-1")).timestamp()
        origin = parsedate_to_datetime(date.decode("latin-1")).timestamp() if date else wall_time
    except (ValueError, TypeError, IndexError, OverflowError):
        return None  # an invalid Expires means "already expired" (RFC 9111 5.3)
    lifetime = expires_at - origin
    return lifetime if lifetime > 0 else None


class ResponseCache:
    """The entries, their LRU order and the counters (hits, misses, stores, evictions)."""

    def __init__(self, settings: ResponseCacheSettings, counters: Counter[str]) -> None:
        self.settings = settings
        self.counters = counters
        self._entries: OrderedDict[CacheKey, CachedResponse] = OrderedDict()
        self.size = 0

    def __len__(self) -> int:
        return len(self._entries)

    # -- what the protocols call ---------------------------------------------------------------

    def try_serve(self, stream: HttpStream, now: float) -> bool:
        """Answer ``stream`` from the cache and return True, or return False and let the app
        run (recording its response when it may be stored)."""
        key = self._request_key(stream)
        if key is None:
            return False
        entry = self.lookup(key, now)
        if entry is not None:
            self._answer(stream, entry, now)
            return True
        if stream.method == "GET":
            _Recorder(self, key, stream)
        return False

    # Every change to the shared entries and counters goes through ``lookup`` and ``store``,
    # so a host whose connections run on several threads can guard just these two.

    def lookup(self, key: CacheKey, now: float) -> CachedResponse | None:
        entry = self._entries.get(key)
        if entry is not None:
            if now < entry.expires_at:
                self._entries.move_to_end(key)
                self.counters["hits"] += 1
                return entry
            self._remove(key)
            self.counters["expirations"] += 1
        self.counters["misses"] += 1
        return None

    def store(self, key: CacheKey, entry: CachedResponse) -> None:
        if entry.size > self.settings.max_size:
            return
        if key in self._entries:
            self._remove(key)
        while self._entries and self.size + entry.size > self.settings.max_size:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.counters["evictions"] += 1
        self._entries[key] = entry
        self.size += entry.size
        self.counters["stores"] += 1

    # -- internals ----------------------------------------------------------------------------

    def _request_key(self, stream: HttpStream) -> CacheKey | None:
        method = stream.method
        if method not in {"GET", "HEAD"}:
            return None
        if not stream.body_complete_flag or stream.request_content_length:
            return None  # HTTP.sys: the request must not have an entity body
        host = b""
        for name, value in stream.headers:
            if name in _BYPASS_REQUEST_HEADERS:
                return None
            if name == b"host":
                host = value.lower()
            elif name == b"translate" and value.strip().lower() == b"f":
                return None
        default_port = _DEFAULT_PORTS.get(stream.scheme)
        if default_port is not None and host.endswith(default_port):
            host = host[: -len(default_port)]
        return (stream.scheme, host, stream.path_base + stream.path, stream.query_string)

    def _answer(self, stream: HttpStream, entry: CachedResponse, now: float) -> None:
        age = max(0, int(now - entry.stored_at))
        stream.status = entry.status
        stream.reason = entry.reason
        stream.response_headers = [*entry.headers, (b"age", str(age).encode())]
        stream.complete(entry.body, now)
        stream.finish()

    def _remove(self, key: CacheKey) -> None:
        entry = self._entries.pop(key)
        self.size -= entry.size


class _Recorder:
    """Stands between a stream and its protocol while a GET's response may still be stored.

    Every call is passed on unchanged; the recorder only keeps a copy of the body. It puts the
    protocol back as the stream's owner the moment the response is stored or ruled out."""

    __slots__ = ("_body", "_body_size", "_cache", "_inner", "_key", "_stream")

    def __init__(self, cache: ResponseCache, key: CacheKey, stream: HttpStream) -> None:
        self._cache = cache
        self._key = key
        self._stream = stream
        self._inner: StreamOwner = stream._owner
        self._body: list[bytes] = []
        self._body_size = 0
        stream._owner = self

    def _step_aside(self) -> None:
        self._stream._owner = self._inner
        self._body.clear()

    def stream_send(
        self,
        stream: HttpStream,
        data: bytes,
        end: bool,
        now: float | None,
        trailers: Headers | None = None,
    ) -> None:
        first = not stream.response_started
        self._inner.stream_send(stream, data, end, now, trailers)
        # Only now are the status and headers final (on-starting callbacks have run).
        if first and (stream.status != 200 or not stream.response_started):
            self._step_aside()
            return
        self._body_size += len(data)
        if self._body_size > self._cache.settings.max_entry_size or trailers or stream.aborted:
            self._step_aside()
            return
        self._body.append(data)
        if end:
            self._store(stream, now)

    def _store(self, stream: HttpStream, now: float | None) -> None:
        lifetime = response_lifetime(stream.response_headers, stream.wall_time)
        if lifetime is not None:
            body = b"".join(self._body)
            headers: Headers = []
            size = len(body) + _ENTRY_OVERHEAD + len(self._key[1]) + len(self._key[2])
            has_length = False
            for name, value in stream.response_headers:
                lowered = name.lower()
                if lowered in _NOT_STORED:
                    continue
                has_length = has_length or lowered == b"content-length"
                headers.append((lowered, value))
                size += len(name) + len(value)
            if not has_length:  # so HEAD, answered from this entry, says what GET would
                headers.append((b"content-length", str(len(body)).encode()))
            stored_at = stream.start_time if now is None else now
            entry = CachedResponse(
                status=stream.status,
                reason=stream.reason,
                headers=headers,
                body=body,
                stored_at=stored_at,
                expires_at=stored_at + lifetime,
                size=size,
            )
            self._cache.store(self._key, entry)
        self._step_aside()

    # Everything else goes straight to the protocol.

    def stream_read_started(self, stream: HttpStream, now: float | None) -> None:
        self._inner.stream_read_started(stream, now)

    def stream_body_consumed(self, stream: HttpStream, now: float | None) -> None:
        self._inner.stream_body_consumed(stream, now)

    def stream_informational(self, stream: HttpStream, status: int, headers: Headers) -> None:
        self._inner.stream_informational(stream, status, headers)

    def stream_abort(self, stream: HttpStream) -> None:
        self._step_aside()
        self._inner.stream_abort(stream)

    def stream_can_write(self, stream: HttpStream) -> bool:
        return self._inner.stream_can_write(stream)

    def stream_finished(self, stream: HttpStream) -> None:
        self._step_aside()
        self._inner.stream_finished(stream)

    def stream_can_transmit_file(self, stream: HttpStream) -> bool:
        return self._inner.stream_can_transmit_file(stream)

    def stream_transmit_file(
        self, stream: HttpStream, segment: FileSegment, end: bool, now: float | None
    ) -> None:
        self._step_aside()  # a file body is not copied into the cache
        self._inner.stream_transmit_file(stream, segment, end, now)

    def stream_file_transmitted(self, stream: HttpStream, now: float | None) -> None:
        self._inner.stream_file_transmitted(stream, now)
