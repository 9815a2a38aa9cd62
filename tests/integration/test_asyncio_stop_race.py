"""A graceful stop that begins while a connection is accepted but not yet made.

The loop accepts a connection and builds its protocol, and only on a later callback calls its
``connection_made``: until then the server does not know it. A worker recycled by
``--max-requests`` exits as soon as ``stop()`` returns, so a stop that finished inside that
window dropped the connection, and its client read end-of-file with no answer."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from tiercel.adapters import asyncio_adapter
from tiercel.apps import Server

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def _run(loop_name: str, main: Any) -> Any:
    if loop_name == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    return asyncio.run(main())


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_a_connection_accepted_as_the_stop_begins_is_answered_before_stop_returns(
    loop_name, monkeypatch
):
    answered: list[bool] = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"served"})
        answered.append(True)

    stops: list[asyncio.Task[None]] = []
    answered_when_stopped: list[bool] = []
    made = asyncio_adapter._Connection.__init__

    async def stop(server: asyncio_adapter.AsyncioServer) -> None:
        await server.stop()
        answered_when_stopped.append(bool(answered))  # where a worker process would exit

    def made_then_stop(self, server, listener):  # the protocol exists; connection_made is due
        made(self, server, listener)
        if not stops:
            stops.append(asyncio.get_running_loop().create_task(stop(server)))

    monkeypatch.setattr(asyncio_adapter._Connection, "__init__", made_then_stop)

    def client(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(REQUEST)
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
            return received

    async def main() -> bytes:
        server = Server(app, "http://127.0.0.1:0", access_log=False, lifespan="off")
        await server.start()
        port = int(server.addresses[0].rsplit(":", 1)[1])
        received = asyncio.create_task(asyncio.to_thread(client, port))
        while not stops:
            await asyncio.sleep(0.01)
        await stops[0]
        return await received

    received = _run(loop_name, main)
    assert answered_when_stopped == [True], "stop() returned before its last connection's answer"
    assert received.startswith(b"HTTP/1.1 200") and received.endswith(b"served")
