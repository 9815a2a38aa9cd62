"""``flush()``, the one call an adapter makes after each engine call (core/flush.py): it must
say exactly what the separate contract calls say, and hand large bodies over uncopied."""

from __future__ import annotations

from engine_harness import Client, parse_responses
from tiercel.core.asgi import AsgiHttpCycle
from tiercel.core.config import Limits
from tiercel.core.flush import ABORT, CLOSE, KEEP_READING, NO_EVENTS, PAUSE_READING, VECTORED_FROM

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def _answer(client: Client, body: bytes, close: bool = False) -> None:
    stream = client.stream
    stream.status = 200
    stream.response_headers = [(b"content-length", b"%d" % len(body))]
    if close:
        stream.response_headers.append((b"connection", b"close"))
    stream.complete(body, client.now)


def test_flush_hands_over_events_data_and_the_next_deadline_at_once():
    client = Client(via_open_connection=True)
    events = client.feed(GET, now=1.0)
    assert len(events) == 1
    flushed_events, data, action, deadline = client.conn.flush()
    assert flushed_events == NO_EVENTS and data == b"" and action == KEEP_READING
    assert deadline is None  # the app has the request: no clock runs
    _answer(client, b"hello")
    flushed_events, data, action, deadline = client.conn.flush()
    assert [type(e).__name__ for e in flushed_events] == ["StreamUpdated"]
    (response,) = parse_responses(data)
    assert response.status == 200 and response.body == b"hello"
    assert action == KEEP_READING
    assert deadline == 1.0 + Limits().keep_alive_timeout
    assert client.conn.flush() == (NO_EVENTS, b"", KEEP_READING, deadline)  # nothing new


def test_flush_says_close_after_a_closing_response():
    client = Client(via_open_connection=True)
    client.feed(GET)
    _answer(client, b"bye", close=True)
    _, data, action, _ = client.conn.flush()
    assert parse_responses(data)[0].header(b"connection") == b"close"
    assert action == CLOSE


def test_flush_says_abort_and_drops_the_unsent_bytes():
    client = Client(via_open_connection=True)
    client.feed(GET)
    client.stream.status = 200
    client.stream.write(b"partial")
    client.conn.set_write_blocked(True, client.now, 1 << 20)  # the client stopped reading
    _, _, action, deadline = client.conn.flush()
    assert action == KEEP_READING and deadline is not None
    client.stream.write(b"more")  # waits unsent behind the blocked transport
    client.timer(deadline)  # the response data rate is broken
    _, data, action, _ = client.conn.flush()
    assert action == ABORT and data == b""


def test_flush_pauses_reading_while_too_much_is_buffered():
    client = Client(Limits(max_request_buffer_size=1024), via_open_connection=True)
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n"
    client.feed(head + b"x" * 2048)  # the app has not read any of it
    assert client.conn.flush()[2] == PAUSE_READING
    client.stream.read_body(client.now)
    assert client.conn.flush()[2] == KEEP_READING


def test_a_large_body_is_handed_over_after_its_head_without_a_copy(codec):
    client = Client(via_open_connection=True)
    client.feed(GET)
    body = b"x" * VECTORED_FROM
    _answer(client, body)
    _, data, _, _ = client.conn.flush()
    assert isinstance(data, list)
    if codec == "fast":  # h11 frames the body itself
        assert data[-1] is body  # the app's own bytes object
    (response,) = parse_responses(b"".join(data))
    assert response.body == body


def test_small_responses_come_as_one_bytes_object():
    client = Client(via_open_connection=True)
    client.feed(GET)
    cycle = AsgiHttpCycle(client.stream)
    cycle.send({"type": "http.response.start", "status": 200, "headers": []})
    cycle.send({"type": "http.response.body", "body": b"small"})
    _, data, _, _ = client.conn.flush()
    assert type(data) is bytes and data.endswith(b"small")
