"""``allow_alternate_schemes`` (``--allow-alternate-schemes``, Kestrel's AllowAlternateSchemes)
over a real h2c connection: HAProxy's ``proto h2`` sends ``:scheme https`` to a cleartext
backend; tiercel refuses that stream by default and accepts it (as the app's scheme) when
allowed. A :scheme that is not a URI scheme is refused either way."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from edge_app import app
from support import RunningServer
from tiercel.apps.options import ServerOptions
from tiercel.core.config import EngineConfig


def h2c_get(port: int, scheme: str) -> tuple[int | None, dict[str, Any] | None]:
    """One prior-knowledge h2c GET with the given :scheme: (status, JSON body) or (None, None)
    when the server resets the stream."""
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
    )
    client.initiate_connection()
    request = [
        (":method", "GET"),
        (":scheme", scheme),
        (":authority", "app.example"),
        (":path", "/where"),
    ]
    client.send_headers(1, request, end_stream=True)
    status: int | None = None
    body = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(client.data_to_send())
        while True:
            data = sock.recv(65536)
            assert data, "connection closed before the stream ended"
            for event in client.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    client.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded):
                    return status, json.loads(body)
                elif isinstance(event, h2.events.StreamReset):
                    return None, None
            sock.sendall(client.data_to_send())


@pytest.fixture(params=[False, True], ids=["strict", "allowed"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[RunningServer, bool]]:
    options = ServerOptions(
        urls="http://127.0.0.1:0",
        access_log=False,
        engine=EngineConfig(allow_alternate_schemes=request.param),
    )
    running = RunningServer(app, options=options).start()
    yield running, request.param
    running.stop()


def test_matching_scheme_is_always_served(server: tuple[RunningServer, bool]) -> None:
    running, _ = server
    status, seen = h2c_get(running.port, "http")
    assert status == 200 and seen is not None
    assert seen["scheme"] == "http"


def test_https_over_cleartext(server: tuple[RunningServer, bool]) -> None:
    running, allowed = server
    status, seen = h2c_get(running.port, "https")
    if allowed:
        assert status == 200 and seen is not None
        assert seen["scheme"] == "https"
        assert seen["http_version"] == "2"
    else:
        assert status is None


def test_a_scheme_that_is_not_a_uri_scheme_is_refused(server: tuple[RunningServer, bool]) -> None:
    running, _ = server
    assert h2c_get(running.port, "1nvalid scheme") == (None, None)
