"""How the asyncio adapter starts apps and writes their answers.

- Pipelined responses share writes: a response that finishes just as the next pipelined request
  starts is held until that request's app has had its first turn, then both go out together.
  Holding must never delay a response behind an app that waits.
- On Python 3.12 and later, an app starts eagerly: one that answers without waiting has its
  answer written before the read that brought the request returns, with a current task set.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from support import RunningServer
from tiercel.adapters.asyncio_adapter import EAGER_TASKS, AsyncioServer, _Connection
from tiercel.adapters.sockets import Listener
from tiercel.apps.options import ServerOptions

REQUEST = b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n"


async def numbered_app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


class RecordingTransport:
    """Counts write calls; everything else a connection asks of a transport, as a no-op."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def writelines(self, pieces: list[bytes]) -> None:
        self.writes.append(b"".join(pieces))

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 5000) if name in ("peername", "sockname") else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None: ...

    def abort(self) -> None: ...


def _connect(app) -> tuple[_Connection, RecordingTransport]:
    server = AsyncioServer(app, ServerOptions(access_log=False))
    server.loop = asyncio.get_running_loop()
    connection = _Connection(server, Listener(sock=None, url="http://127.0.0.1:8000"))
    transport = RecordingTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


async def _serve_pipelined(count: int) -> list[bytes]:
    connection, transport = _connect(numbered_app)
    connection.data_received(b"".join(REQUEST % i for i in range(count)))
    for _ in range(1000):
        if b"".join(transport.writes).count(b"HTTP/1.1 200") == count:
            break
        await asyncio.sleep(0)
    return transport.writes


@pytest.mark.parametrize("count", [2, 16])
def test_pipelined_responses_go_out_in_one_write(count):
    writes = asyncio.run(_serve_pipelined(count))
    assert len(writes) == 1
    data = writes[0]
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


async def _answer_in_the_read() -> tuple[list[bytes], list[object]]:
    tasks: list[object] = []

    async def app(scope, receive, send):
        if scope["type"] == "http":
            tasks.append(asyncio.current_task())  # anyio and sniffio need one
            await numbered_app(scope, receive, send)

    connection, transport = _connect(app)
    connection.data_received(REQUEST % 1)
    written_in_the_read = list(transport.writes)
    for _ in range(10):
        await asyncio.sleep(0)
    assert transport.writes, "no answer at all"
    return written_in_the_read, tasks


def test_an_app_that_answers_without_waiting_starts_eagerly_where_python_can():
    written, tasks = asyncio.run(_answer_in_the_read())
    assert tasks and tasks[0] is not None
    if EAGER_TASKS:  # Python 3.12+: eager_start
        assert len(written) == 1 and written[0].endswith(b"\r\n\r\n/1")
    else:  # 3.11: the task runs on the loop's next turn
        assert written == []


@pytest.mark.parametrize("count", [2, 16])
def test_pipelined_answers_keep_their_order_when_apps_start_eagerly(count):
    """Eager or not, every answer goes out after the ones before it."""
    data = b"".join(asyncio.run(_serve_pipelined(count)))
    positions = [data.index(b"\r\n\r\n/%d" % i) for i in range(count)]
    assert positions == sorted(positions)
