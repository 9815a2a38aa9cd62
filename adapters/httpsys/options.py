"""The HTTP.sys adapter's options, named and defaulted as ASP.NET Core's ``HttpSysOptions``.

Pure Python: checked on every platform, so a bad value is reported before anything looks for
httpapi.dll. The URL prefixes themselves come from ``--urls`` and are parsed by
``tiercel.core.url_prefixes``; the request body limit is the engine's
``Limits.max_request_body_size`` (the same 30,000,000-byte default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tiercel.core.errors import ConfigError
from tiercel.core.url_prefixes import PrefixTable, UrlPrefix, parse_url_prefix

from .binding import (
    HTTP_AUTH_ENABLE_BASIC,
    HTTP_AUTH_ENABLE_KERBEROS,
    HTTP_AUTH_ENABLE_NEGOTIATE,
    HTTP_AUTH_ENABLE_NTLM,
)

QUEUE_MODES = ("create", "attach", "createorattach")
VERBOSITIES = {"basic": 0, "limited": 1, "full": 2}  # HTTP_503_RESPONSE_VERBOSITY
AUTH_SCHEMES = {
    "basic": HTTP_AUTH_ENABLE_BASIC,
    "ntlm": HTTP_AUTH_ENABLE_NTLM,
    "negotiate": HTTP_AUTH_ENABLE_NEGOTIATE,
    "kerberos": HTTP_AUTH_ENABLE_KERBEROS,
}
# What a 401 carries for each enabled scheme (as ASP.NET Core's HttpSys server adds them).
CHALLENGES = {
    "negotiate": b"Negotiate",
    "kerberos": b"Kerberos",
    "ntlm": b"NTLM",
    "basic": b'Basic realm=""',
}
MAX_QUEUE_NAME = 260


@dataclass(frozen=True)
class HttpSysOptions:
    max_connections: int | None = None  # None: the machine-wide setting; -1: unlimited
    request_queue_limit: int | None = None  # None: HTTP.sys's own default, 1000
    request_queue_name: str | None = None  # None: an anonymous queue
    request_queue_mode: str = "create"
    http503_verbosity: str = "basic"
    authentication_schemes: tuple[str, ...] = ()  # negotiate, ntlm, basic, kerberos
    allow_anonymous: bool = True
    enable_response_caching: bool = True
    max_accepts: int | None = None  # outstanding receives; None: 5 x processors

    def __post_init__(self) -> None:
        if self.max_connections is not None and not (
            self.max_connections == -1 or self.max_connections >= 1
        ):
            raise ConfigError(
                f"max connections must be -1 (unlimited) or at least 1 (got {self.max_connections})"
            )
        if self.request_queue_limit is not None and self.request_queue_limit < 1:
            raise ConfigError(
                f"request queue limit must be at least 1 (got {self.request_queue_limit})"
            )
        name = self.request_queue_name
        if name is not None and (not name or len(name) > MAX_QUEUE_NAME or "/" in name):
            raise ConfigError(
                f"request queue name {name!r} must be 1 to {MAX_QUEUE_NAME} characters without '/'"
            )
        mode = self.request_queue_mode.lower()
        if mode not in QUEUE_MODES:
            raise ConfigError(
                f"unknown request queue mode {self.request_queue_mode!r}; choose one of: "
                + ", ".join(QUEUE_MODES)
            )
        if mode != "create" and name is None:
            raise ConfigError(
                f"request queue mode {mode!r} needs a request queue name to attach to"
            )
        object.__setattr__(self, "request_queue_mode", mode)
        if self.http503_verbosity.lower() not in VERBOSITIES:
            raise ConfigError(
                f"unknown 503 verbosity {self.http503_verbosity!r}; choose one of: "
                + ", ".join(VERBOSITIES)
            )
        object.__setattr__(self, "http503_verbosity", self.http503_verbosity.lower())
        schemes = tuple(s.strip().lower() for s in self.authentication_schemes if s.strip())
        for scheme in schemes:
            if scheme not in AUTH_SCHEMES:
                raise ConfigError(
                    f"unknown authentication scheme {scheme!r}; choose from: "
                    + ", ".join(AUTH_SCHEMES)
                )
        object.__setattr__(self, "authentication_schemes", schemes)
        if not self.allow_anonymous and not schemes:
            raise ConfigError(
                "refusing anonymous requests needs an authentication scheme "
                "(e.g. --httpsys-auth negotiate,ntlm)"
            )
        if self.max_accepts is not None and self.max_accepts < 1:
            raise ConfigError(f"max accepts must be at least 1 (got {self.max_accepts})")

    @property
    def accepts(self) -> int:
        return self.max_accepts or 5 * (os.cpu_count() or 1)

    @property
    def auth_scheme_flags(self) -> int:
        flags = 0
        for scheme in self.authentication_schemes:
            flags |= AUTH_SCHEMES[scheme]
        return flags

    def challenges(self) -> list[bytes]:
        return [CHALLENGES[s] for s in CHALLENGES if s in self.authentication_schemes]


def parse_url_prefixes(urls: str) -> tuple[UrlPrefix, ...]:
    """``--urls`` for HTTP.sys: ';'-separated prefixes, each parsed and none registered twice."""
    prefixes = tuple(parse_url_prefix(text) for text in urls.split(";") if text.strip())
    if not prefixes:
        raise ConfigError("--urls: no URL prefix given; write e.g. --urls http://+:8080/")
    PrefixTable((prefix, index) for index, prefix in enumerate(prefixes))  # refuses duplicates
    return prefixes
