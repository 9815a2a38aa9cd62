"""The feature contract as docs/custom-servers.md states it, for a server without the engine.

The example class is taken from the document itself, so the page cannot drift from the code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from tiercel.apps.feature_host import hello_app
from tiercel.core.features import (
    ConnectionFeature,
    FeatureCollection,
    MaxRequestBodySizeFeature,
    RequestFeature,
    RequestLifetimeFeature,
    ResponseBodyFeature,
    ResponseFeature,
    ServerAddressesFeature,
    collect_features,
)

DOC = Path(__file__).parents[2] / "docs" / "custom-servers.md"
MARK = "<!-- tested by tests/custom_server/test_feature_contract.py -->"


def doc_example() -> dict[str, Any]:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(re.escape(MARK) + r"\s*```python\n(.*?)```", text, re.DOTALL)
    assert block, f"{DOC} lost its tested example"
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), str(DOC), "exec"), namespace)
    return namespace


class Recorder:
    """Stands in for the OS API that a real server would call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def send_head(self, status: int, reason: str | None, headers: list[Any]) -> None:
        self.calls.append(("head", status, reason, headers))

    def send_body(self, data: bytes, end: bool) -> None:
        self.calls.append(("body", data, end))


def exchange(target: bytes = b"/hello%20there?x=1", body: bytes = b"") -> tuple[Any, Recorder]:
    transport = Recorder()
    headers = [(b"host", b"example")]
    return doc_example()["ParsedExchange"]("POST", target, headers, body, transport), transport


def test_the_documented_exchange_satisfies_the_minimum_and_lifetime_features() -> None:
    request, _ = exchange()
    features = collect_features(request)
    for feature in (RequestFeature, ResponseFeature, ResponseBodyFeature, RequestLifetimeFeature):
        assert features[feature] is request
    assert ConnectionFeature not in features
    assert MaxRequestBodySizeFeature not in features


def test_an_app_runs_on_it() -> None:
    request, transport = exchange()
    hello_app(collect_features(request))
    assert transport.calls == [
        ("head", 200, None, [(b"content-type", b"text/plain")]),
        ("body", b"Hello, POST /hello there\n", False),
        ("body", b"", True),
    ]


def test_body_callbacks_and_server_features() -> None:
    events: list[str] = []
    server_features = FeatureCollection()
    server_features.set(ServerAddressesFeature, doc_example()["Addresses"](["http://x:1"]))

    def app(features: FeatureCollection) -> None:
        response = features[ResponseFeature]
        response.on_starting(lambda: events.append("starting 1"))
        response.on_starting(lambda: events.append("starting 2"))
        response.on_completed(lambda: events.append("completed"))
        body = features[RequestFeature].read_body()
        assert features[RequestFeature].read_body() == b""
        response.status = 201
        features[ResponseBodyFeature].write(body)
        assert response.has_started
        features[ResponseBodyFeature].complete(b"!")
        events.append(" ".join(features[ServerAddressesFeature].addresses))

    request, transport = exchange(body=b"payload")
    app(collect_features(request, server_features))
    assert events == ["starting 2", "starting 1", "completed", "http://x:1"]  # reverse order
    assert transport.calls[0][:2] == ("head", 201)
    assert [call[1:] for call in transport.calls[1:]] == [
        (b"payload", False),
        (b"!", False),
        (b"", True),
    ]


def test_a_missing_minimum_feature_is_named() -> None:
    class RequestOnly:
        protocol, http_version, scheme, method, path_base = "HTTP/1.1", "1.1", "http", "GET", ""
        path, raw_path, query_string, raw_target, headers = "/", b"/", b"", b"/", []
        body_complete = True

        def read_body(self, now: float | None = None) -> bytes:
            return b""

    with pytest.raises(TypeError, match="ResponseFeature, ResponseBodyFeature"):
        collect_features(RequestOnly())
