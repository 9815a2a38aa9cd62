"""Hosting a synchronous feature app on the engine's streams: the IHttpApplication side.

A custom server that drives the engine hands every event of every connection to one
``FeatureAppHost``. The host reads each request body as it arrives (the first read sends
``100 Continue`` and enforces the body size limit), runs the app once the body is complete, with
``read_body`` returning all of it, and mends what the app left undone: a 500 when it sent
nothing, a reset when it stopped halfway. Then it calls ``stream.finish()``, as the engine asks
of every host. See docs/custom-servers.md.
"""

# FeatureCollection is keyed by Protocol classes, which mypy rejects where type[T] is expected.
# mypy: disable-error-code="type-abstract"

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tiercel.core.events import Event, RequestReceived
from tiercel.core.features import (
    FeatureCollection,
    RequestFeature,
    ResponseBodyFeature,
    ResponseFeature,
    ServerAddressesFeature,
    collect_features,
)
from tiercel.core.stream import HttpStream

log = logging.getLogger("tiercel.error")

FeatureApp = Callable[[FeatureCollection], None]
"""Reads the request features and writes the whole response before it returns."""


@dataclass
class BufferedRequest:
    """The stream's request feature, except that ``read_body`` returns the body read ahead."""

    stream: HttpStream
    body: bytes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    def read_body(self, now: float | None = None) -> bytes:
        body, self.body = self.body, b""
        return body


class FeatureAppHost:
    def __init__(self, app: FeatureApp, addresses: ServerAddressesFeature | None = None) -> None:
        self.app = app
        self.server_features = FeatureCollection()  # each request's collection falls back to it
        self.server_features.set(ServerAddressesFeature, addresses)
        self._bodies: dict[HttpStream, list[bytes]] = {}  # requests whose body is still arriving

    def handle(self, events: list[Event], now: float) -> None:
        """Read request bodies ahead and run the app for each request whose body is complete.

        Reading and responding queue more events on the connection (the next pipelined request,
        say): the server passes them in too, from ``conn.pop_events()``.
        """
        for event in events:
            stream = event.stream
            if isinstance(event, RequestReceived):
                self._bodies[stream] = []
            if (body := self._bodies.get(stream)) is None:
                continue  # the app has run already
            while chunk := stream.read_body(now):  # the first call sends 100 Continue
                body.append(chunk)
            if stream.aborted or stream.body_complete:
                del self._bodies[stream]
                if stream.aborted:
                    stream.finish()  # no app will run: let go of the stream at once
                else:
                    self.run(stream, b"".join(body), now)

    def run(self, stream: HttpStream, body: bytes, now: float) -> None:
        """Run the app for one request, mend what it left undone, then let go of the stream."""
        features = collect_features(stream, self.server_features)
        features.set(RequestFeature, BufferedRequest(stream, body))
        try:
            self.app(features)
        except Exception:
            log.exception("the app failed on %s %s", stream.method, stream.raw_target)
        try:
            if stream.response_complete or stream.aborted:
                return
            if stream.has_started:  # half a response cannot be mended: reset the stream
                stream.abort()
            else:
                stream.status, stream.reason, stream.response_headers = 500, None, []
                stream.complete(b"Internal Server Error\n", now)
        finally:
            stream.finish()  # exactly once per stream: HTTP/2 counts streams until then


def hello_app(features: FeatureCollection) -> None:
    """The smallest feature app: says hello, with the method and path it was asked for."""
    request = features[RequestFeature]
    features[ResponseFeature].response_headers = [(b"content-type", b"text/plain")]
    features[ResponseBodyFeature].complete(f"Hello, {request.method} {request.path}\n".encode())
