"""Remembered request heads (core/http1_fast.py): a head seen before is not parsed again, and
what it gives is exactly what parsing gives, request after request and server by server."""

from __future__ import annotations

from typing import Any

import pytest
from engine_harness import Client, EchoDriver, make_context, parse_responses
from tiercel.core import http1_fast
from tiercel.core.config import Limits
from tiercel.core.http1_codec import NEED_DATA, PAUSED
from tiercel.core.http1_fast import CACHED_HEAD_SIZE, CACHED_HEADS, FastCodec, RequestHeads
from tiercel.core.http1_head import RequestHead

# The cache belongs to the fast codec; these tests name it themselves.
RUNS_BOTH_CODECS = True

HEAD = b"GET /items?page=2 HTTP/1.1\r\nHost: example.test\r\nAccept: */*\r\n\r\n"


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every head the one-pass parser is asked to parse, from now on."""
    seen: list[bytes] = []
    parse = http1_fast.parse_simple_head

    def counting(buffer: Any, end: int, limits: Limits) -> Any:
        seen.append(bytes(buffer[: end + 4]))
        return parse(buffer, end, limits)

    monkeypatch.setattr(http1_fast, "parse_simple_head", counting)
    return seen


def test_a_head_repeated_on_any_connection_of_a_server_is_parsed_once(parses):
    context = make_context(http1_codec="fast")
    first, second = EchoDriver(Client(context=context)), EchoDriver(Client(context=context))
    first.feed(HEAD)
    second.feed(HEAD)
    second.feed(HEAD)
    assert parses == [HEAD]
    assert len(context.request_heads) == 1
    for driver, count in ((first, 1), (second, 2)):
        responses = parse_responses(bytes(driver.output))
        assert [r.status for r in responses] == [200] * count
    streams = first.client.streams + second.client.streams
    assert {(s.method, s.path, s.query_string) for s in streams} == {("GET", "/items", b"page=2")}
    assert all(s.headers == [(b"host", b"example.test"), (b"accept", b"*/*")] for s in streams)


def test_each_request_gets_a_header_list_of_its_own():
    """An app (or middleware) that edits scope["headers"] in place must not change what the
    next request with the same head sees."""
    context = make_context(http1_codec="fast")
    first, second = EchoDriver(Client(context=context)), EchoDriver(Client(context=context))
    first.feed(HEAD)
    first.client.stream.headers.append((b"x-added-by-app", b"1"))
    first.client.stream.headers[0] = (b"host", b"changed.test")
    second.feed(HEAD)
    assert second.client.stream.headers == [(b"host", b"example.test"), (b"accept", b"*/*")]


def test_pipelined_repeats_in_one_read_are_each_answered(parses):
    driver = EchoDriver(Client(context=make_context(http1_codec="fast")))
    driver.feed(HEAD * 5)
    assert [r.status for r in parse_responses(bytes(driver.output))] == [200] * 5
    assert parses == [HEAD]


def test_a_long_head_is_parsed_every_time_and_not_remembered(parses):
    long_head = (
        b"GET / HTTP/1.1\r\nHost: example.test\r\nCookie: " + b"c" * CACHED_HEAD_SIZE + b"\r\n\r\n"
    )
    context = make_context(http1_codec="fast")
    driver = EchoDriver(Client(context=context))
    driver.feed(long_head + long_head)
    assert [r.status for r in parse_responses(bytes(driver.output))] == [200, 200]
    assert len(parses) == 2
    assert len(context.request_heads) == 0


def test_the_cache_stays_bounded_whatever_the_clients_send():
    context = make_context(http1_codec="fast")
    driver = EchoDriver(Client(context=context))
    for number in range(CACHED_HEADS * 2 + 3):
        driver.feed(b"GET /%d HTTP/1.1\r\nHost: example.test\r\n\r\n" % number)
        assert len(context.request_heads) <= CACHED_HEADS
    assert len(parse_responses(bytes(driver.output))) == CACHED_HEADS * 2 + 3


def test_a_refused_head_is_not_remembered_and_is_refused_again():
    context = make_context(http1_codec="fast")
    for _ in range(2):
        client = Client(context=context)
        client.feed(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        assert client.out().startswith(b"HTTP/1.1 400 ")
    assert len(context.request_heads) == 0


def test_servers_with_different_limits_decide_the_same_bytes_by_their_own_limits():
    head = b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    generous = EchoDriver(Client(context=make_context(http1_codec="fast")))
    generous.feed(head)
    assert parse_responses(bytes(generous.output))[0].status == 200
    strict = Client(context=make_context(Limits(max_request_header_count=3), http1_codec="fast"))
    strict.feed(head)
    assert strict.out().startswith(b"HTTP/1.1 431 ")


def _remembering_codecs() -> tuple[FastCodec, FastCodec]:
    """Two connections' codecs of one server: the first has parsed HEAD, so it is remembered."""
    heads = RequestHeads(CACHED_HEADS)
    first = FastCodec(Limits(), heads)
    first.receive_data(HEAD)
    assert isinstance(first.next_event(), RequestHead)
    return first, FastCodec(Limits(), heads)


def test_a_read_that_is_a_remembered_head_is_counted_and_comes_before_later_bytes(parses):
    _, codec = _remembering_codecs()
    later = b"GET /next HTTP/1.1\r\nHost: example.test\r\n\r\n"
    codec.receive_data(HEAD)
    codec.receive_data(later)
    assert codec.buffered_size == len(HEAD) + len(later)
    first = codec.next_event()
    assert isinstance(first, RequestHead)
    assert (first.target, first.headers) == (
        b"/items?page=2",
        [
            (b"host", b"example.test"),
            (b"accept", b"*/*"),
        ],
    )
    assert codec.buffered_size == len(later)
    assert codec.next_event() is PAUSED  # no body: the request is complete
    codec.start_next_cycle()
    second = codec.next_event()
    assert isinstance(second, RequestHead) and second.target == b"/next"
    assert parses == [HEAD, later]  # HEAD parsed once, by the first codec


def test_a_remembered_head_then_the_peer_closing_is_still_a_request():
    _, codec = _remembering_codecs()
    codec.receive_data(HEAD)
    codec.receive_data(b"")
    assert isinstance(codec.next_event(), RequestHead)


def test_bytes_taken_for_a_protocol_switch_keep_their_order():
    _, codec = _remembering_codecs()
    codec.receive_data(HEAD)
    codec.receive_data(b"after")
    assert codec.take_remaining() == HEAD + b"after"
    assert codec.buffered_size == 0
    assert codec.next_event() is NEED_DATA


@pytest.mark.parametrize("buffer", [bytearray, memoryview])
def test_a_remembered_head_in_another_buffer_type_is_still_a_request(buffer):
    _, codec = _remembering_codecs()
    codec.receive_data(buffer(HEAD))  # type: ignore[arg-type]
    head = codec.next_event()
    assert isinstance(head, RequestHead) and head.target == b"/items?page=2"
