"""The engine's side of direct file transmission, fed bytes directly (no sockets): which
connections may send a file raw, the framing around it, and the order of bytes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from tiercel.core.asgi import AsgiHttpCycle
from tiercel.core.config import EngineConfig
from tiercel.core.context import ServerContext, TransportInfo
from tiercel.core.errors import LocalProtocolError
from tiercel.core.events import RequestReceived
from tiercel.core.files import FileSegment, file_body_from_message
from tiercel.core.http1 import Http1Protocol
from tiercel.core.stream import HttpStream

PLAIN = TransportInfo(sendfile=True)


def _request(
    conn: Http1Protocol, head: bytes = b"GET /f HTTP/1.1\r\nhost: x\r\n\r\n"
) -> HttpStream:
    events = conn.receive_data(head, 1.0)
    (received,) = [e for e in events if isinstance(e, RequestReceived)]
    return received.stream


@pytest.fixture
def segment(tmp_path: Path) -> FileSegment:
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    return FileSegment(path.open("rb"), 2, 5)


def test_whole_file_gets_a_content_length_and_nothing_overtakes_it(segment: FileSegment) -> None:
    conn = Http1Protocol(ServerContext(), PLAIN, 0.0)
    stream = _request(
        conn, b"GET /f HTTP/1.1\r\nhost: x\r\n\r\nGET /next HTTP/1.1\r\nhost: x\r\n\r\n"
    )
    cycle = AsgiHttpCycle(stream)
    cycle.send({"type": "http.response.start", "status": 200, "headers": []})
    cycle.send({"type": "http.response.zerocopysend", "file": segment.file, "count": 5})
    assert cycle.begin_file(segment.count) is True
    assert stream.can_transmit_file
    stream.transmit_file(segment, True, 1.0)
    head = conn.data_to_send()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 5\r\n" in head and b"chunked" not in head
    assert stream.transmitting_file and not stream.response_complete
    assert conn.data_to_send() == b""  # nothing may follow until the file is written
    stream.file_transmitted(2.0)
    assert stream.response_complete
    # The pipelined request is only now taken up.
    assert [e for e in conn.pop_events() if isinstance(e, RequestReceived)]


def test_a_file_in_the_middle_of_a_chunked_body_is_framed(segment: FileSegment) -> None:
    conn = Http1Protocol(ServerContext(), PLAIN, 0.0)
    stream = _request(conn)
    stream.write(b"abc", 1.0)
    stream.transmit_file(segment, False, 1.0)
    before = conn.data_to_send()
    assert before.endswith(b"3\r\nabc\r\n5\r\n")
    stream.file_transmitted(1.5)
    stream.complete(b"", 1.5)
    assert conn.data_to_send() == b"\r\n0\r\n\r\n"


def test_head_sends_the_length_and_no_file(segment: FileSegment) -> None:
    conn = Http1Protocol(ServerContext(), PLAIN, 0.0)
    stream = _request(conn, b"HEAD /f HTTP/1.1\r\nhost: x\r\n\r\n")
    cycle = AsgiHttpCycle(stream)
    cycle.send({"type": "http.response.start", "status": 200, "headers": []})
    cycle.send({"type": "http.response.pathsend", "path": "/any"})
    cycle.begin_file(segment.count)
    stream.transmit_file(segment, True, 1.0)
    assert not stream.transmitting_file and stream.response_complete
    assert b"content-length: 5\r\n" in conn.data_to_send()


@pytest.mark.parametrize(
    ("transport", "config"),
    [
        (TransportInfo(), EngineConfig()),  # the adapter did not offer sendfile
        (PLAIN, EngineConfig(http1_codec="h11")),  # h11 must see every byte
    ],
    ids=["adapter-without-sendfile", "h11-codec"],
)
def test_connections_that_cannot_send_a_file_raw(
    transport: TransportInfo, config: EngineConfig, segment: FileSegment
) -> None:
    conn = Http1Protocol(ServerContext(config), transport, 0.0)
    stream = _request(conn)
    assert not stream.can_transmit_file
    with pytest.raises(LocalProtocolError, match="cannot send a file raw"):
        stream.transmit_file(segment, True, 1.0)


def test_the_file_counts_against_the_response_data_rate(segment: FileSegment) -> None:
    conn = Http1Protocol(ServerContext(), PLAIN, 0.0)
    stream = _request(conn)
    big = FileSegment(segment.file, 0, 10_000_000)
    stream.response_headers = [(b"content-length", b"10000000")]
    stream.transmit_file(big, True, 1.0)
    deadline = conn.next_deadline()
    assert deadline is not None and deadline == pytest.approx(1.0 + 10_000_000 / 240)
    conn.on_timer(deadline)
    assert conn.should_abort  # the client did not read the file in time


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"type": "http.response.pathsend"}, "needs 'path'"),
        ({"type": "http.response.zerocopysend", "file": b"x"}, "needs 'file'"),
        (
            {"type": "http.response.zerocopysend", "file": io.FileIO(os.devnull), "count": -1},
            "'count' must be >= 0",
        ),
    ],
)
def test_bad_file_messages(message: dict[str, object], error: str) -> None:
    with pytest.raises(LocalProtocolError, match=error):
        file_body_from_message(message)
