"""How the asyncio adapter starts apps and writes their answers.

- Answers share writes: bytes produced while apps of the same connection have been started but
  not yet run (the next pipelined request, HTTP/2 streams that arrived together) are held until
  those apps have had their first turn, then go out together. Holding must never delay an
  answer behind an app that waits.
- Apps start once the loop has handed out a turn's reads, each at once up to its first real
  wait (adapters/app_tasks.py): one that answers without waiting gets no task of its own, but
  still sees a current task.

Reads are delivered as a transport delivers them: from a loop callback, outside any task.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest
from support import RunningServer
from tiercel.adapters.asyncio_adapter import AsyncioServer, _Connection
from tiercel.adapters.sockets import Listener
from tiercel.apps.options import ServerOptions

# The in-process benchmark's fake transport: what a connection asks of one, writes recorded.
sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from inprocess import FakeTransport

REQUEST = b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n"


async def numbered_app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _connect(app) -> tuple[_Connection, FakeTransport]:
    server = AsyncioServer(app, ServerOptions(access_log=False))
    server.loop = asyncio.get_running_loop()
    connection = _Connection(server, Listener(sock=None, url="http://127.0.0.1:8000"))
    transport = FakeTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


async def _deliver(connection: _Connection, transport: FakeTransport, data: bytes) -> bytes:
    """``data_received`` from a loop callback, as a transport calls it; what was written
    before it returned."""
    loop = asyncio.get_running_loop()
    written: asyncio.Future[bytes] = loop.create_future()

    def read() -> None:
        connection.data_received(data)
        written.set_result(b"".join(transport.out))

    loop.call_soon(read)
    return await written


async def _serve_pipelined(count: int) -> tuple[bytes, int]:
    connection, transport = _connect(numbered_app)
    await _deliver(connection, transport, b"".join(REQUEST % i for i in range(count)))
    for _ in range(1000):
        if b"".join(transport.out).count(b"HTTP/1.1 200") == count:
            break
        await asyncio.sleep(0)
    return b"".join(transport.out), transport.write_calls


@pytest.mark.parametrize("count", [2, 16])
def test_pipelined_responses_go_out_in_one_write(count):
    data, write_calls = asyncio.run(_serve_pipelined(count))
    assert write_calls == 1
    positions = [data.index(b"\r\n\r\n/%d" % i) for i in range(count)]
    assert positions == sorted(positions)  # in request order


RELEASE = threading.Event()


async def waiting_app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/wait":
        while not RELEASE.is_set():
            await asyncio.sleep(0.01)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_held_response_does_not_wait_for_the_next_app(loop):
    """The second app waits until the test has read the first response: if that response
    were held until the second app finished, the read would time out."""
    RELEASE.clear()
    server = RunningServer(waiting_app, loop=loop).start()
    try:
        with server.connect(timeout=5) as sock:
            sock.sendall(  # one send: the second request is pipelined behind the first
                b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /wait HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            received = b""
            while not received.endswith(b"/first"):
                received += sock.recv(4096)
            RELEASE.set()
            while not received.endswith(b"/wait"):
                received += sock.recv(4096)
    finally:
        RELEASE.set()
        server.stop()


async def _answer_without_waiting() -> tuple[bytes, bytes, list[object]]:
    """What was written by the end of the read, and by the end of the loop turn after it;
    the app's current task."""
    tasks: list[object] = []

    async def app(scope, receive, send):
        if scope["type"] == "http":
            tasks.append(asyncio.current_task())  # anyio and sniffio need one
            await numbered_app(scope, receive, send)

    connection, transport = _connect(app)
    written_in_the_read = await _deliver(connection, transport, REQUEST % 1)
    await asyncio.sleep(0)
    return written_in_the_read, b"".join(transport.out), tasks


def test_an_app_that_answers_without_waiting_is_answered_on_the_next_turn():
    """Reads first, apps after: the app starts once the loop has handed out its reads (every
    ready connection is read before any is answered), and its answer is out by the end of
    that turn, with a current task set (test_app_tasks.py: without a task of its own)."""
    in_the_read, after_one_turn, tasks = asyncio.run(_answer_without_waiting())
    assert in_the_read == b""
    assert after_one_turn.endswith(b"\r\n\r\n/1")
    assert tasks and tasks[0] is not None


@pytest.mark.parametrize("count", [2, 16])
def test_pipelined_answers_keep_their_order_when_apps_start_at_once(count):
    """Every answer goes out after the ones before it."""
    data, _ = asyncio.run(_serve_pipelined(count))
    positions = [data.index(b"\r\n\r\n/%d" % i) for i in range(count)]
    assert positions == sorted(positions)


async def _serve_h2_streams(count: int) -> tuple[bytes, int]:
    import h2.config
    import h2.connection

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    for index in range(count):
        stream_id = client.get_next_available_stream_id()
        headers = [(":method", "GET"), (":scheme", "http"), (":authority", "x")]
        client.send_headers(stream_id, [*headers, (":path", f"/{index}")], end_stream=True)
    connection, transport = _connect(numbered_app)
    await _deliver(connection, transport, client.data_to_send())
    for _ in range(100):
        await asyncio.sleep(0)
    answered = {
        event.stream_id
        for event in client.receive_data(b"".join(transport.out))
        if type(event).__name__ == "StreamEnded"
    }
    assert len(answered) == count
    return b"".join(transport.out), transport.write_calls


def test_answers_to_http2_streams_started_together_share_a_write():
    """Ten streams in one read: their apps start together, and what each sends is held until
    the last has had its first turn, so the server's SETTINGS and the ten answers go out in
    one write, not eleven."""
    _, write_calls = asyncio.run(_serve_h2_streams(10))
    assert write_calls == 1
