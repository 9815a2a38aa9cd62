"""tiercel's sans-IO engine: HTTP/1.1, limits, timeouts, the feature contract and the ASGI
translation. No sockets, threads, event loops or clocks live here."""

from .addresses import DEFAULT_URLS, Endpoint, parse_url, parse_urls
from .asgi import AsgiHttpCycle, http_scope, lifespan_scope
from .config import DataRate, EngineConfig, Limits
from .connection import EngineConnection, open_connection
from .context import EngineObserver, Rejection, ServerContext, TransportInfo
from .errors import (
    ConfigError,
    LocalProtocolError,
    RemoteProtocolError,
    RequestBodyTooLarge,
    TiercelError,
)
from .events import ConnectionDelegated, Event, RequestReceived, StreamUpdated
from .features import (
    ConnectionFeature,
    FeatureCollection,
    MaxRequestBodySizeFeature,
    RequestFeature,
    RequestLifetimeFeature,
    ResponseBodyFeature,
    ResponseFeature,
    SendFileFeature,
    ServerAddressesFeature,
    collect_features,
)
from .stream import ClientDisconnected, HttpStream

__all__ = [
    "DEFAULT_URLS",
    "AsgiHttpCycle",
    "ClientDisconnected",
    "ConfigError",
    "ConnectionDelegated",
    "ConnectionFeature",
    "DataRate",
    "Endpoint",
    "EngineConfig",
    "EngineConnection",
    "EngineObserver",
    "Event",
    "FeatureCollection",
    "HttpStream",
    "Limits",
    "LocalProtocolError",
    "MaxRequestBodySizeFeature",
    "Rejection",
    "RemoteProtocolError",
    "RequestBodyTooLarge",
    "RequestFeature",
    "RequestLifetimeFeature",
    "RequestReceived",
    "ResponseBodyFeature",
    "ResponseFeature",
    "SendFileFeature",
    "ServerAddressesFeature",
    "ServerContext",
    "StreamUpdated",
    "TiercelError",
    "TransportInfo",
    "collect_features",
    "http_scope",
    "lifespan_scope",
    "open_connection",
    "parse_url",
    "parse_urls",
]
