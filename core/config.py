"""Engine configuration: limits and timeouts with Kestrel's defaults.

Every value is checked when the object is built, so a bad setting fails at start-up with a
message that names it, never in the middle of a request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .delegation import DelegationRules
from .errors import ConfigError
from .forwarded import ForwardedOptions
from .response_cache import ResponseCacheSettings


@dataclass(frozen=True, slots=True)
class DataRate:
    """A minimum data rate: ``bytes_per_second`` averaged after a ``grace_period`` in seconds."""

    bytes_per_second: float = 240.0
    grace_period: float = 5.0

    def __post_init__(self) -> None:
        if not self.bytes_per_second > 0:
            raise ConfigError(
                f"a minimum data rate needs bytes_per_second > 0 (got {self.bytes_per_second}); "
                "turn the check off with None instead"
            )
        if not self.grace_period >= 0:
            raise ConfigError(f"grace_period must be >= 0 seconds (got {self.grace_period})")


def _positive_or_none(name: str, value: float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(f"{name} must be a number (got {value!r})")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be {bound} (got {value}); use None for no limit")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits. Names and defaults follow ``KestrelServerLimits``."""

    max_request_line_size: int = 8_192
    max_request_headers_total_size: int = 32_768
    max_request_header_count: int = 100
    max_request_body_size: int | None = 30_000_000
    max_request_buffer_size: int = 1_048_576
    max_response_buffer_size: int = 65_536
    max_concurrent_connections: int | None = None
    keep_alive_timeout: float = 130.0
    request_headers_timeout: float = 30.0
    min_request_body_data_rate: DataRate | None = field(default_factory=DataRate)
    min_response_data_rate: DataRate | None = field(default_factory=DataRate)
    # Kestrel drains an unread request body for a fixed 5 s; we also bound the bytes so a
    # client cannot make the server read gigabytes nobody asked for.
    drain_timeout: float = 5.0
    max_drain_size: int = 1_048_576

    def __post_init__(self) -> None:
        for name in (
            "max_request_line_size",
            "max_request_headers_total_size",
            "max_request_header_count",
            "max_request_buffer_size",
            "keep_alive_timeout",
            "request_headers_timeout",
        ):
            value = getattr(self, name)
            if value is None:
                raise ConfigError(f"limits.{name} cannot be None")
            _positive_or_none(f"limits.{name}", value)
        _positive_or_none("limits.max_request_body_size", self.max_request_body_size)
        _positive_or_none("limits.max_concurrent_connections", self.max_concurrent_connections)
        _positive_or_none("limits.max_response_buffer_size", self.max_response_buffer_size)
        _positive_or_none("limits.drain_timeout", self.drain_timeout, allow_zero=True)
        _positive_or_none("limits.max_drain_size", self.max_drain_size, allow_zero=True)
        for name in ("min_request_body_data_rate", "min_response_data_rate"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, DataRate):
                raise ConfigError(f"limits.{name} must be a DataRate or None (got {value!r})")

    def with_overrides(self, **changes: Any) -> Limits:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(
                f"unknown limit(s): {', '.join(unknown)}; known limits: {', '.join(sorted(known))}"
            )
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What one connection engine needs to know. Shared by every connection of a server."""

    limits: Limits = field(default_factory=Limits)
    # The value of the Server response header; None leaves the header out.
    server_header: str | None = "tiercel"
    # Requests whose path starts with root_path are presented to the app with it as path base.
    root_path: str = ""
    # "fast" (tiercel's own) or "h11" (the reference codec) for HTTP/1.1.
    http1_codec: str = "fast"
    # Forwarded headers and host filtering (core/forwarded.py); None leaves both off.
    forwarded: ForwardedOptions | None = None
    # Set in an app process started by ``tiercel module`` (core/pairing.py): every request
    # without this token in X-Tiercel-Token is refused with 400. None turns the check off.
    pairing_token: str | None = None
    # The HTTP.sys-style response cache (core/response_cache.py); None leaves it off.
    response_cache: ResponseCacheSettings | None = None
    # Kestrel's AllowAlternateSchemes: accept an HTTP/2 :scheme that differs from the connection's
    # (HAProxy's ``proto h2`` sends "https" over cleartext) and give it to the app as the scheme.
    allow_alternate_schemes: bool = False
    # Request delegation (core/delegation.py): first requests of cleartext HTTP/1.1
    # connections matching a rule are handed to another process; None leaves it off.
    delegation: DelegationRules | None = None

    def __post_init__(self) -> None:
        self._check_response_cache()
        if self.delegation is not None and not isinstance(self.delegation, DelegationRules):
            raise ConfigError(
                f"delegation must be DelegationRules or None (got {self.delegation!r})"
            )
        if not isinstance(self.limits, Limits):
            raise ConfigError(f"limits must be a Limits object (got {self.limits!r})")
        if self.server_header is not None and (
            not self.server_header.isprintable() or not self.server_header.isascii()
        ):
            raise ConfigError(
                "server_header must be printable ASCII (got "
                f"{self.server_header!r}); use None to send no Server header"
            )
        if self.forwarded is not None and not isinstance(self.forwarded, ForwardedOptions):
            raise ConfigError(
                f"forwarded must be ForwardedOptions or None (got {self.forwarded!r})"
            )
        token = self.pairing_token
        if token is not None and not (token and token.isascii() and token.isprintable()):
            raise ConfigError("pairing_token must be non-empty printable ASCII (or None)")
        if self.http1_codec not in ("fast", "h11"):
            raise ConfigError(f"http1_codec must be 'fast' or 'h11' (got {self.http1_codec!r})")
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ConfigError(
                f"root_path must start with '/' and not end with one (got {self.root_path!r}), "
                "e.g. '/api'"
            )

    def _check_response_cache(self) -> None:
        cache = self.response_cache
        if cache is not None and not isinstance(cache, ResponseCacheSettings):
            raise ConfigError(
                "response_cache must be ResponseCacheSettings(max_size=...) or None "
                f"(got {cache!r})"
            )
