"""Drive Http1Protocol / Http2Protocol by hand with forwarded options on."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
from tiercel.core.config import EngineConfig
from tiercel.core.context import ServerContext, TransportInfo
from tiercel.core.events import RequestReceived
from tiercel.core.forwarded import ForwardedHeaders, ForwardedOptions
from tiercel.core.http1 import Http1Protocol
from tiercel.core.http2 import Http2Limits, Http2Protocol
from tiercel.core.stream import HttpStream

ALL = ForwardedHeaders.ALL
PROXY = ("127.0.0.1", 50000)
LOCAL = ("127.0.0.1", 8000)


def options(**kwargs: Any) -> ForwardedOptions:
    kwargs.setdefault("headers", ALL)
    return ForwardedOptions(**kwargs)


def context(opts: ForwardedOptions | None) -> ServerContext:
    return ServerContext(EngineConfig(forwarded=opts), wall_time=1e9)


def h1(
    headers: list[tuple[str, str]],
    opts: ForwardedOptions | None = None,
    *,
    peer: tuple[str, int] | None = PROXY,
    path: str = "/x",
    method: str = "GET",
    scheme: str = "http",
) -> tuple[HttpStream | None, bytes]:
    """One HTTP/1.1 request; the stream the app would get (None if refused) and the bytes out."""
    conn = Http1Protocol(context(opts or options()), TransportInfo(LOCAL, peer, scheme=scheme), 0.0)
    if not any(n.lower() == "host" for n, _ in headers):
        headers = [("Host", "app.test"), *headers]
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    events = conn.receive_data((head + "\r\n").encode("latin-1"), 0.0)
    streams = [e.stream for e in events if isinstance(e, RequestReceived)]
    return (streams[0] if streams else None), conn.data_to_send()


def h2_request(
    headers: list[tuple[str, str]],
    opts: ForwardedOptions | None = None,
    *,
    peer: tuple[str, int] | None = PROXY,
    path: str = "/x",
    authority: str = "app.test",
) -> tuple[HttpStream | None, list[h2.events.Event]]:
    """One HTTP/2 request; the stream the app would get (None if refused) and the client's
    events for the server's answer."""
    server = Http2Protocol(
        context(opts or options()), TransportInfo(LOCAL, peer), 0.0, Http2Limits()
    )
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    server.receive_data(client.data_to_send(), 0.0)
    client.receive_data(server.data_to_send())
    request = [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", authority),
        (":path", path),
        *[(n.lower(), v) for n, v in headers],
    ]
    client.send_headers(1, request, end_stream=True)
    events = server.receive_data(client.data_to_send(), 0.0)
    streams = [e.stream for e in events if isinstance(e, RequestReceived)]
    answer = client.receive_data(server.data_to_send())
    return (streams[0] if streams else None), answer


def header(stream: HttpStream, name: bytes) -> list[bytes]:
    return [v for n, v in stream.headers if n == name]
