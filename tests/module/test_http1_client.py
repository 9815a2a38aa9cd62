"""The sans-IO HTTP/1.1 client codec (core/http1_client.py), fed bytes directly."""

from __future__ import annotations

import pytest
from tiercel.core.errors import LocalProtocolError
from tiercel.core.http1_client import (
    Body,
    Informational,
    ResponseEnded,
    ResponseEvent,
    ResponseReader,
    ResponseStarted,
    UpstreamProtocolError,
    encode_chunk,
    serialize_request_head,
    strip_hop_by_hop,
)


def feed_bytewise(reader: ResponseReader, data: bytes) -> list[ResponseEvent]:
    events: list[ResponseEvent] = []
    for i in range(len(data)):
        events.extend(reader.feed(data[i : i + 1]))
    return events


def body_of(events: list[ResponseEvent]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Body))


def test_content_length_response_keeps_the_connection() -> None:
    reader = ResponseReader("GET")
    events = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhel")
    started = events[0]
    assert isinstance(started, ResponseStarted)
    assert (started.status, started.reason, started.content_length) == (200, b"OK", 5)
    assert (b"x-a", b"b") in started.headers
    events += reader.feed(b"lo")
    assert body_of(events) == b"hello"
    assert events[-1] == ResponseEnded(keep_alive=True)
    assert reader.done


@pytest.mark.parametrize("feed", ["whole", "bytewise"])
def test_chunked_response_is_decoded_whatever_the_packet_boundaries(feed: str) -> None:
    wire = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer-A: x\r\n\r\n"
    )
    reader = ResponseReader("GET")
    events = reader.feed(wire) if feed == "whole" else feed_bytewise(reader, wire)
    assert isinstance(events[0], ResponseStarted) and events[0].chunked
    assert body_of(events) == b"hello world"
    assert events[-1] == ResponseEnded(keep_alive=True)


def test_close_delimited_response_ends_at_eof_and_is_not_reused() -> None:
    reader = ResponseReader("GET")
    events = reader.feed(b"HTTP/1.1 200 OK\r\n\r\nsome")
    events += reader.feed(b" body")
    assert not reader.done
    events += reader.feed_eof()
    assert body_of(events) == b"some body"
    assert events[-1] == ResponseEnded(keep_alive=False)


@pytest.mark.parametrize(
    ("method", "head"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"),
        ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ],
)
def test_responses_without_a_body(method: str, head: bytes) -> None:
    reader = ResponseReader(method)
    events = reader.feed(head)
    assert isinstance(events[0], ResponseStarted)
    assert events[1:] == [ResponseEnded(keep_alive=True)]


def test_interim_responses_come_before_the_final_one() -> None:
    reader = ResponseReader("POST")
    events = reader.feed(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    )
    assert events[0] == Informational(100, [])
    assert events[1] == Informational(103, [(b"link", b"</a>")])
    assert isinstance(events[2], ResponseStarted) and events[2].status == 201
    assert body_of(events) == b"ok"


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
    ],
)
def test_keep_alive_decision(head: bytes, keep_alive: bool) -> None:
    assert ResponseReader("GET").feed(head)[-1] == ResponseEnded(keep_alive)


def test_bytes_after_the_response_forbid_reuse() -> None:
    reader = ResponseReader("GET")
    events = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxGARBAGE")
    assert events[-1] == ResponseEnded(keep_alive=False)
    assert reader.trailing_bytes == b"GARBAGE"


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\x01\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
    ],
)
def test_malformed_responses_are_refused(wire: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        ResponseReader("GET").feed(wire)


def test_head_size_and_header_count_are_bounded() -> None:
    reader = ResponseReader("GET", max_head_size=1024)
    with pytest.raises(UpstreamProtocolError, match="larger than 1024"):
        for _ in range(100):  # never a complete head: must fail once past the bound
            reader.feed(b"X-Long: " + b"a" * 50 + b"\r\n")
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(11))
    with pytest.raises(UpstreamProtocolError, match="more than 10"):
        ResponseReader("GET", max_header_count=10).feed(b"HTTP/1.1 200 OK\r\n" + many + b"\r\n")


def test_eof_inside_a_response_is_an_error() -> None:
    reader = ResponseReader("GET")
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(UpstreamProtocolError, match="inside the body"):
        reader.feed_eof()
    with pytest.raises(UpstreamProtocolError, match="before the response head"):
        ResponseReader("GET").feed_eof()


def test_request_serialization_and_chunks() -> None:
    head = serialize_request_head("POST", b"/a?b=1", [(b"host", b"x"), (b"x-y", b"z")])
    assert head == b"POST /a?b=1 HTTP/1.1\r\nhost: x\r\nx-y: z\r\n\r\n"
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert encode_chunk(b"") == b""
    with pytest.raises(LocalProtocolError):
        serialize_request_head("GET", b"/a b", [])
    with pytest.raises(LocalProtocolError):
        serialize_request_head("GET", b"/", [(b"x", b"a\r\nInjected: 1")])


def test_hop_by_hop_headers_are_stripped() -> None:
    headers = [
        (b"connection", b"close, X-Secret"),
        (b"keep-alive", b"timeout=5"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"websocket"),
        (b"x-secret", b"1"),
        (b"content-type", b"text/plain"),
    ]
    assert strip_hop_by_hop(headers) == [(b"content-type", b"text/plain")]
