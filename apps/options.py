"""Everything a host needs to start serving, checked up front."""

from __future__ import annotations

from dataclasses import dataclass, field

from tiercel.core.addresses import DEFAULT_URLS, Endpoint, parse_urls
from tiercel.core.config import EngineConfig
from tiercel.core.errors import ConfigError

ADAPTERS = ("asyncio",)
LOOPS = ("auto", "asyncio", "uvloop")
LIFESPAN_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class ServerOptions:
    urls: str = DEFAULT_URLS
    adapter: str = "asyncio"
    loop: str = "auto"
    engine: EngineConfig = field(default_factory=EngineConfig)
    shutdown_timeout: float = 30.0
    access_log: bool = True
    lifespan: str = "auto"
    endpoints: tuple[Endpoint, ...] = ()

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
        if not self.endpoints:
            object.__setattr__(self, "endpoints", tuple(parse_urls(self.urls)))
