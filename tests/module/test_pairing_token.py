"""The engine's pairing-token check (core/pairing.py) over real sockets, HTTP/1.1 and h2c."""

from __future__ import annotations

import socket
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from support import RunningServer, echo_app, recv_until_closed
from tiercel.apps.options import ServerOptions
from tiercel.core.config import EngineConfig
from tiercel.core.errors import ConfigError

TOKEN = "s3cret-token"


async def headers_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    names = b",".join(name for name, _ in scope["headers"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": names})


@pytest.fixture
def server() -> Any:
    options = ServerOptions(
        urls="http://127.0.0.1:0", access_log=False, engine=EngineConfig(pairing_token=TOKEN)
    )
    running = RunningServer(headers_app, options=options).start()
    yield running
    running.stop()


def _get(server: RunningServer, extra: bytes) -> bytes:
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n")
        return recv_until_closed(sock)


def test_requests_without_the_right_token_get_400_and_are_counted(server: RunningServer) -> None:
    assert _get(server, b"").startswith(b"HTTP/1.1 400 ")
    assert _get(server, b"X-Tiercel-Token: nope\r\n").startswith(b"HTTP/1.1 400 ")
    doubled = b"X-Tiercel-Token: %b\r\nX-Tiercel-Token: %b\r\n" % (TOKEN.encode(), TOKEN.encode())
    assert _get(server, doubled).startswith(b"HTTP/1.1 400 ")
    assert server.server._impl.context.rejections["pairing_token"] == 3


def test_the_token_is_removed_before_the_app_runs(server: RunningServer) -> None:
    answer = _get(server, b"X-Tiercel-Token: " + TOKEN.encode() + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"x-tiercel-token" not in answer.partition(b"\r\n\r\n")[2]


def test_h2c_requests_are_checked_too(server: RunningServer) -> None:
    statuses = []
    for headers in ([], [("x-tiercel-token", TOKEN)]):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(
            1,
            [
                (":method", "GET"),
                (":path", "/"),
                (":scheme", "http"),
                (":authority", "x"),
                *headers,
            ],
            end_stream=True,
        )
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(conn.data_to_send())
            status = None
            while status is None:
                data = sock.recv(65536)
                assert data
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers)[b":status"]
                sock.sendall(conn.data_to_send())
        statuses.append(status)
    assert statuses == [b"400", b"200"]


def test_bad_token_configuration() -> None:
    with pytest.raises(ConfigError, match="pairing_token"):
        EngineConfig(pairing_token="bad\ntoken")


def test_echo_app_unaffected_without_token_setting() -> None:
    running = RunningServer(echo_app).start()
    try:
        with running.connect() as sock:
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert recv_until_closed(sock).startswith(b"HTTP/1.1 200 ")
    finally:
        running.stop()
