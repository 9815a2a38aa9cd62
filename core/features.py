"""The feature contract: the minimum a server provides so tiercel's hosting can run an app.

It mirrors ASP.NET Core's ``IHttpRequestFeature``, ``IHttpResponseFeature``,
``IHttpResponseBodyFeature`` and friends. A server (the engine's adapters, the HTTP.sys adapter,
or a custom server of your own) puts objects that satisfy these protocols in a
``FeatureCollection``; the hosting layers (ASGI, WSGI) only ever talk to features. The engine's
``HttpStream`` implements every per-request feature in one object, so building the collection
costs nothing per request.

All methods are synchronous and never block: writes are buffered in the server, which flushes
them; ``can_write`` tells a host when to wait before writing more. Methods that depend on time
take ``now`` (seconds on the server's monotonic clock) because the engine never reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

Headers = list[tuple[bytes, bytes]]


@runtime_checkable
class RequestFeature(Protocol):
    protocol: str  # "HTTP/1.1"
    http_version: str  # "1.1"
    scheme: str  # "http" or "https"
    method: str
    path_base: str  # the part of the path the app is mounted at (ASGI root_path)
    path: str  # percent-decoded, without path_base
    raw_path: bytes
    query_string: bytes  # raw, without the leading "?"
    raw_target: bytes
    headers: Headers  # lower-case names, in the order received, not merged

    @property
    def body_complete(self) -> bool: ...

    def read_body(self, now: float | None = None) -> bytes:
        """All body bytes received so far and not yet read; b"" when none are waiting.

        The first call is "the app starts reading": it sends 100 Continue when the client asked
        for it and makes the max request body size read-only.
        """
        ...


@runtime_checkable
class ResponseFeature(Protocol):
    status: int
    reason: str | None
    response_headers: Headers

    @property
    def has_started(self) -> bool: ...

    def on_starting(self, callback: Callable[[], None]) -> None: ...

    def on_completed(self, callback: Callable[[], None]) -> None: ...


@runtime_checkable
class ResponseBodyFeature(Protocol):
    @property
    def can_write(self) -> bool: ...

    def start(self, now: float | None = None) -> None: ...

    def write(self, data: bytes, now: float | None = None) -> None: ...

    def complete(
        self, data: bytes = b"", now: float | None = None, trailers: Headers | None = None
    ) -> None:
        """Write the last bytes (if any) and end the response, with optional trailers."""
        ...


@runtime_checkable
class SendFileFeature(Protocol):
    """Optional: send a file region as the body (HTTP.sys TransmitFile, os.sendfile, ...)."""

    def send_file(self, path: str, offset: int = 0, count: int | None = None) -> None: ...


@runtime_checkable
class ConnectionFeature(Protocol):
    connection_id: str
    local_address: tuple[str, int] | str | None
    remote_address: tuple[str, int] | None


@runtime_checkable
class RequestLifetimeFeature(Protocol):
    @property
    def aborted(self) -> bool: ...

    def abort(self) -> None: ...


@runtime_checkable
class MaxRequestBodySizeFeature(Protocol):
    max_request_body_size: int | None

    @property
    def is_read_only(self) -> bool: ...


@runtime_checkable
class ServerAddressesFeature(Protocol):
    addresses: list[str]


T = TypeVar("T")


class FeatureCollection:
    """Features by type, with a revision counter bumped on every change (as in ASP.NET).

    Lookups that miss fall through to ``defaults`` (the server-level collection).
    """

    __slots__ = ("_defaults", "_features", "revision")

    def __init__(self, defaults: FeatureCollection | None = None) -> None:
        self._features: dict[type[Any], Any] = {}
        self._defaults = defaults
        self.revision = 0

    def set(self, feature_type: type[T], instance: T | None) -> None:
        if instance is None:
            self._features.pop(feature_type, None)
        else:
            self._features[feature_type] = instance
        self.revision += 1

    def get(self, feature_type: type[T]) -> T | None:
        found = self._features.get(feature_type)
        if found is None and self._defaults is not None:
            return self._defaults.get(feature_type)
        return cast("T | None", found)

    def __getitem__(self, feature_type: type[T]) -> T:
        found = self.get(feature_type)
        if found is None:
            raise KeyError(f"this server does not provide {feature_type.__name__}")
        return found

    def __contains__(self, feature_type: type[Any]) -> bool:
        return self.get(feature_type) is not None


PER_REQUEST_FEATURES: tuple[type[Any], ...] = (
    RequestFeature,
    ResponseFeature,
    ResponseBodyFeature,
    ConnectionFeature,
    RequestLifetimeFeature,
    MaxRequestBodySizeFeature,
)
MINIMUM_FEATURES: tuple[type[Any], ...] = (RequestFeature, ResponseFeature, ResponseBodyFeature)


def collect_features(
    implementation: object, defaults: FeatureCollection | None = None
) -> FeatureCollection:
    """A collection that maps every per-request feature ``implementation`` satisfies to it."""
    features = FeatureCollection(defaults)
    for feature_type in PER_REQUEST_FEATURES:
        if isinstance(implementation, feature_type):
            features.set(feature_type, implementation)
    missing = [t.__name__ for t in MINIMUM_FEATURES if t not in features]
    if missing:
        raise TypeError(
            f"{type(implementation).__name__} lacks the minimum features: {', '.join(missing)}"
        )
    return features
