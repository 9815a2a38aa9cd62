"""The HTTP/1.1 engine, driven by feeding bytes and fake time: no sockets, no clock."""

from __future__ import annotations

import re

import pytest
from engine_harness import Client, EchoDriver, make_context, parse_responses
from tiercel.core.asgi import AsgiHttpCycle
from tiercel.core.config import DataRate, Limits
from tiercel.core.errors import LocalProtocolError
from tiercel.core.http1 import Phase
from tiercel.core.status import reason_phrase
from tiercel.core.stream import ClientDisconnected

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def get(path: bytes = b"/", *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"


def post(body: bytes, *headers: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s" % (size, extra, body)


def chunked_post(*chunks: bytes, end: bool = True) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    if end:
        body += b"0\r\n\r\n"
    return b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body


def read_all(stream) -> bytes:
    body = b""
    while True:
        data = stream.read_body()
        if not data:
            return body
        body += data


# --- keep-alive, pipelining, bodies ------------------------------------------------------------


@pytest.mark.parametrize("via_open_connection", [False, True], ids=["http1", "open_connection"])
def test_keep_alive_serves_requests_one_after_another(via_open_connection):
    driver = EchoDriver(Client(via_open_connection=via_open_connection))
    for i in range(3):
        driver.feed(get(b"/r%d" % i))
        assert driver.client.conn.is_idle
        assert not driver.client.conn.should_close
    responses = parse_responses(bytes(driver.output))
    assert [r.body for r in responses] == [b"echo GET /r0", b"echo GET /r1", b"echo GET /r2"]
    assert all(r.header(b"connection") is None for r in responses)


def test_pipelined_requests_are_answered_in_order():
    client = Client()
    client.feed(get(b"/a") + post(b"hello") + get(b"/c"))
    # Only the first request is parsed while its response is pending.
    assert [s.raw_target for s in client.streams] == [b"/a"]
    assert client.out() == b""
    client.streams[0].complete(b"A")
    client.events()
    assert [s.raw_target for s in client.streams] == [b"/a", b"/p"]
    assert read_all(client.streams[1]) == b"hello"
    client.streams[1].complete(b"B")
    assert len(client.streams) == 3
    client.streams[2].complete(b"C")
    responses = parse_responses(client.out())
    assert [r.body for r in responses] == [b"A", b"B", b"C"]
    assert client.conn.phase is Phase.IDLE


@pytest.mark.parametrize("via_open_connection", [False, True], ids=["http1", "open_connection"])
def test_pipelined_requests_with_echo_driver_in_one_feed(via_open_connection):
    driver = EchoDriver(Client(via_open_connection=via_open_connection))
    driver.feed(b"".join(get(b"/%d" % i) for i in range(10)))
    responses = parse_responses(bytes(driver.output))
    assert [r.body for r in responses] == [b"echo GET /%d" % i for i in range(10)]


def test_chunked_request_body_is_delivered():
    driver = EchoDriver(Client())
    driver.feed(chunked_post(b"hello", b" ", b"world" * 100))
    assert driver.seen[0].body == b"hello world" + b"world" * 99
    assert parse_responses(bytes(driver.output))[0].status == 200


def test_chunked_request_body_with_extensions_and_trailers():
    driver = EchoDriver(Client())
    driver.feed(
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n0\r\nX-Trailer: yes\r\n\r\n" + get(b"/next")
    )
    assert [s.body for s in driver.seen] == [b"hello", b""]
    assert len(parse_responses(bytes(driver.output))) == 2


@pytest.mark.parametrize(
    ("chunks", "body"),
    [
        (b"A\r\n0123456789\r\n", b"0123456789"),
        (b"a\r\n0123456789\r\n", b"0123456789"),
        (b"0005\r\nhello\r\n", b"hello"),
        (b"5;a\r\nhello\r\n", b"hello"),
        (b'5;a=b;c="d \\" e";f=g\r\nhello\r\n', b"hello"),
        (b'5;a="\xe9"\r\nhello\r\n', b"hello"),
        (b"0;final=yes\r\n", b""),
    ],
    ids=[
        "upper-hex",
        "lower-hex",
        "leading-zeros",
        "ext-name",
        "ext-values",
        "ext-obs-text",
        "ext-last",
    ],
)
def test_valid_chunked_variants_are_accepted(chunks, body):
    driver = EchoDriver(Client())
    head = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    end = b"" if chunks.startswith(b"0;") else b"0\r\n"
    driver.feed(head + chunks + end + b"\r\n" + get(b"/next"))
    assert [s.body for s in driver.seen] == [body, b""]
    assert not driver.client.conn.should_close


@pytest.mark.parametrize("piece", [1, 2, 3, 1460, 4096])
def test_fixed_length_body_in_pieces(piece):
    body = bytes(range(256)) * 40
    data = post(body) + get(b"/after")
    driver = EchoDriver(Client())
    for start in range(0, len(data), piece):
        driver.feed(data[start : start + piece])
    assert [s.body for s in driver.seen] == [body, b""]
    assert [s.target for s in driver.seen] == [b"/p", b"/after"]


@pytest.mark.parametrize("piece", [1, 5, 1460])
def test_chunked_body_in_pieces(piece):
    data = chunked_post(b"a" * 100, b"b" * 3000, b"c") + get(b"/after")
    driver = EchoDriver(Client())
    for start in range(0, len(data), piece):
        driver.feed(data[start : start + piece])
    assert [s.body for s in driver.seen] == [b"a" * 100 + b"b" * 3000 + b"c", b""]


def test_body_arrives_before_the_app_reads_it():
    client = Client()
    client.feed(post(b"0123456789"))
    stream = client.stream
    assert stream.body_complete
    assert stream.body_buffered == 10
    assert read_all(stream) == b"0123456789"


# --- response framing --------------------------------------------------------------------------


def test_response_is_chunked_without_content_length():
    client = Client()
    client.feed(GET)
    stream = client.stream
    stream.write(b"abc")
    stream.write(b"")
    stream.complete(b"def")
    (response,) = parse_responses(client.out())
    assert response.header(b"transfer-encoding") == b"chunked"
    assert response.header(b"content-length") is None
    assert response.body == b"abcdef"
    assert client.conn.phase is Phase.IDLE


def test_content_length_is_added_when_the_whole_body_is_sent_at_once():
    client = Client()
    client.feed(GET)
    client.stream.complete(b"hello")
    out = client.out()
    (response,) = parse_responses(out)
    assert response.header(b"content-length") == b"5"
    assert response.header(b"transfer-encoding") is None
    assert out.endswith(b"\r\n\r\nhello")


def test_app_content_length_is_kept():
    client = Client()
    client.feed(GET)
    stream = client.stream
    stream.response_headers = [(b"content-length", b"6")]
    stream.write(b"abc")
    stream.complete(b"def")
    (response,) = parse_responses(client.out())
    assert response.header(b"content-length") == b"6"
    assert response.body == b"abcdef"


def test_head_gets_no_body():
    client = Client()
    client.feed(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
    client.streams[0].complete(b"hello")
    out = client.out()
    assert b"hello" not in out
    assert out.endswith(b"\r\n\r\n")
    client.streams[1].complete(b"second")
    responses = parse_responses(out + client.out(), methods=["HEAD", "GET"])
    assert [r.body for r in responses] == [b"", b"second"]


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status):
    client = Client()
    client.feed(GET + GET)
    stream = client.streams[0]
    stream.status = status
    stream.write(b"ignored")
    stream.complete(b"also ignored")
    out = client.out()
    assert b"ignored" not in out
    assert out.startswith(b"HTTP/1.1 %d " % status)
    assert out.endswith(b"\r\n\r\n")
    (response,) = parse_responses(out)
    assert response.header(b"content-length") is None
    assert response.header(b"transfer-encoding") is None
    # The connection goes on to the next request.
    assert len(client.streams) == 2


# --- Expect: 100-continue -----------------------------------------------------------------------


EXPECT = post(b"", b"Expect: 100-continue", length=5)


def test_100_continue_is_sent_when_the_body_is_first_read():
    client = Client()
    client.feed(EXPECT)
    stream = client.stream
    assert client.out() == b""
    assert stream.read_body() == b""
    assert client.out() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert stream.read_body() == b""
    assert client.out() == b"", "100 Continue is sent once"
    client.feed(b"hello")
    assert read_all(stream) == b"hello"
    stream.complete(b"ok")
    (response,) = parse_responses(client.out())
    assert response.status == 200
    assert not client.conn.should_close


def test_no_100_continue_when_the_app_answers_without_reading():
    client = Client()
    client.feed(EXPECT)
    client.stream.status = 417
    client.stream.complete(b"no thanks")
    out = client.out()
    assert b"100 Continue" not in out
    (response,) = parse_responses(out)
    assert response.status == 417
    # The client may still send the body or not: the framing is unknowable, so close.
    assert client.conn.should_close
    client.feed(b"hello" + GET)
    assert len(client.streams) == 1
    assert client.out() == b""


@pytest.mark.parametrize(
    ("limits", "request_bytes"),
    [
        (Limits(), EXPECT),
        (Limits(max_drain_size=100), post(b"", length=5000)),
    ],
    ids=["expect-unread", "body-over-max-drain-size"],
)
def test_closing_after_an_unread_body_is_announced(limits, request_bytes):
    """RFC 9110 10.1.1, RFC 9112 9.6: the close is decided before the head goes out."""
    client = Client(limits)
    client.feed(request_bytes)
    client.stream.complete(b"not reading")
    (response,) = parse_responses(client.out())
    assert client.conn.should_close
    assert response.header(b"connection") == b"close"


def test_client_that_does_not_wait_for_100_continue_keeps_the_connection():
    client = Client()
    client.feed(EXPECT + b"hello" + GET)
    client.streams[0].complete(b"answered without reading")
    assert b"100 Continue" not in client.out()
    # The body had arrived, so the framing is known: the next request is served.
    assert [s.raw_target for s in client.streams] == [b"/p", b"/"]


def test_no_100_continue_when_the_response_started_first():
    client = Client()
    client.feed(EXPECT)
    stream = client.stream
    stream.start()
    stream.read_body()
    assert b"100 Continue" not in client.out()


def test_expect_is_ignored_for_http_10():
    client = Client()
    client.feed(b"POST / HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    stream = client.stream
    assert not stream.expect_continue
    stream.read_body()
    assert client.out() == b""


# --- draining an unread body -------------------------------------------------------------------


def test_small_unread_body_is_drained_and_the_next_request_served():
    client = Client()
    client.feed(post(b"x" * 1000))
    client.stream.complete(b"not reading")
    assert not client.conn.should_close
    client.feed(get(b"/next"))
    assert [s.raw_target for s in client.streams] == [b"/p", b"/next"]


def test_unread_body_arriving_after_the_response_is_drained():
    client = Client()
    client.feed(post(b"", length=3000))
    client.stream.complete(b"early")
    assert client.conn.phase is Phase.DRAINING
    client.feed(b"y" * 1000)
    client.feed(b"y" * 2000 + get(b"/next"))
    assert [s.raw_target for s in client.streams] == [b"/p", b"/next"]
    assert client.streams[0].body_buffered == 0


def test_unread_chunked_body_is_drained():
    client = Client()
    client.feed(chunked_post(b"a" * 100, end=False))
    client.stream.complete(b"early")
    client.feed(b"5\r\nhello\r\n0\r\n\r\n" + get(b"/next"))
    assert [s.raw_target for s in client.streams] == [b"/c", b"/next"]


def test_body_larger_than_max_drain_size_closes():
    client = Client(Limits(max_drain_size=1000))
    client.feed(post(b"x" * 10, length=5000))
    client.stream.complete(b"early")
    assert client.conn.should_close
    (response,) = parse_responses(client.out())
    assert response.status == 200


def test_chunked_body_beyond_max_drain_size_closes_while_draining():
    client = Client(Limits(max_drain_size=1000))
    client.feed(chunked_post(end=False))
    client.stream.complete(b"early")
    assert client.conn.phase is Phase.DRAINING
    client.feed(b"400\r\n" + b"z" * 0x400 + b"\r\n")
    assert client.conn.should_close


def test_drain_timeout_closes():
    client = Client(Limits(drain_timeout=5.0))
    client.feed(post(b"", length=100), now=10.0)
    client.stream.complete(b"early", now=11.0)
    assert client.conn.next_deadline() == pytest.approx(16.0)
    client.timer(16.0)
    assert client.conn.should_close


# --- connection management ---------------------------------------------------------------------


def test_connection_close_is_honoured():
    client = Client()
    client.feed(get(b"/", b"Connection: close") + GET)
    client.stream.complete(b"bye")
    (response,) = parse_responses(client.out())
    assert response.header(b"connection") == b"close"
    assert client.conn.should_close
    assert len(client.streams) == 1


def test_http_10_closes_after_the_response():
    client = Client()
    client.feed(b"GET / HTTP/1.0\r\n\r\n" + GET)
    client.stream.complete(b"bye")
    out = client.out()
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert client.conn.should_close
    assert len(client.streams) == 1


def test_http_10_keep_alive_request_gets_a_consistent_answer():
    # HTTP/1.0 persistence is optional (RFC 9112 9.3); the answer must match what happens.
    client = Client()
    client.feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    client.stream.complete(b"hi")
    (response,) = parse_responses(client.out())
    connection = response.header(b"connection")
    if client.conn.should_close:
        assert connection in (None, b"close")
    else:
        assert connection == b"keep-alive"


def test_date_header_comes_from_the_context_tick():
    context = make_context(wall_time=0.0)
    client = Client(context=context)
    context.tick(784111777.0)
    client.feed(GET)
    client.stream.complete(b"")
    (response,) = parse_responses(client.out())
    assert response.header(b"date") == b"Sun, 06 Nov 1994 08:49:37 GMT"
    context.tick(784111777.9)  # same second: same value
    context.tick(784111778.2)
    client.feed(GET)
    client.stream.complete(b"")
    (response,) = parse_responses(client.out())
    assert response.header(b"date") == b"Sun, 06 Nov 1994 08:49:38 GMT"


def test_app_date_and_server_headers_win():
    client = Client()
    client.feed(GET)
    client.stream.response_headers = [(b"Date", b"then"), (b"Server", b"mine")]
    client.stream.complete(b"")
    (response,) = parse_responses(client.out())
    assert response.header(b"date") == b"then"
    assert response.header(b"server") == b"mine"


@pytest.mark.parametrize(
    ("given", "expected_date", "expected_server"),
    [
        ([(b"Date", b"then")], b"then", b"tiercel"),
        ([(b"Server", b"mine")], b"Sun, 06 Nov 1994 08:49:37 GMT", b"mine"),
    ],
)
def test_the_engine_adds_the_date_or_server_the_app_did_not_set(
    given, expected_date, expected_server
):
    context = make_context(wall_time=784111777.0)
    for _ in range(2):  # and the next response, with both lines again
        client = Client(context=context)
        client.feed(GET)
        client.stream.response_headers = given
        client.stream.complete(b"")
        (response,) = parse_responses(client.out())
        assert (response.header(b"date"), response.header(b"server")) == (
            expected_date,
            expected_server,
        )
        client.feed(GET)
        client.stream.complete(b"")
        (response,) = parse_responses(client.out())
        assert response.header(b"date") == b"Sun, 06 Nov 1994 08:49:37 GMT"
        assert response.header(b"server") == b"tiercel"


def test_server_header_default_and_off():
    client = Client()
    client.feed(GET)
    client.stream.complete(b"")
    assert parse_responses(client.out())[0].header(b"server") == b"tiercel"

    client = Client(server_header=None)
    client.feed(GET)
    client.stream.complete(b"")
    assert b"server" not in parse_responses(client.out())[0].names()
    client.feed(b"BAD\r\n\r\n")
    error = parse_responses(client.out())[0]
    assert error.status == 400
    assert b"server" not in error.names()
    assert error.header(b"date")


@pytest.mark.parametrize(
    "status", [200, 201, 202, 206, 299, 301, 404, 418, 422, 451, 500, 503, 599, 799, 999]
)
def test_reason_phrase_on_every_status_line(status):
    client = Client()
    client.feed(GET)
    client.stream.status = status
    client.stream.complete(b"x")
    line = client.out().split(b"\r\n", 1)[0]
    assert re.fullmatch(rb"HTTP/1\.1 %d [\x21-\x7e][\x20-\x7e]*" % status, line), line
    assert line == b"HTTP/1.1 %d %s" % (status, reason_phrase(status))


def test_custom_reason_phrase():
    client = Client()
    client.feed(GET)
    client.stream.status = 299
    client.stream.reason = "Fine Anyway"
    client.stream.complete(b"")
    assert client.out().startswith(b"HTTP/1.1 299 Fine Anyway\r\n")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"BAD\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (get(b"/", b"Expect: nope"), 417),
        (get(b"/" + b"a" * 9000), 414),
    ],
)
def test_error_responses_have_reason_date_and_close(raw, status):
    client = Client()
    client.feed(raw)
    out = client.out()
    assert out.startswith(b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status)))
    (response,) = parse_responses(out)
    assert response.header(b"connection") == b"close"
    assert response.header(b"date")
    assert client.conn.should_close
    assert client.observer.rejections[0].status == status


# --- request body size limit -------------------------------------------------------------------


def test_413_when_content_length_exceeds_the_limit_at_first_read():
    client = Client(Limits(max_request_body_size=10))
    client.feed(post(b"x" * 11))
    stream = client.stream
    assert client.out() == b"", "nothing happens until the app reads"
    stream.read_body()
    assert stream.aborted
    (response,) = parse_responses(client.out())
    assert response.status == 413
    assert client.conn.should_close
    with pytest.raises(ClientDisconnected):
        stream.complete(b"too late")


@pytest.mark.parametrize(
    "body",
    [b"Content-Length: 11\r\n\r\n", b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"],
    ids=["413", "400-bad-chunk"],
)
def test_error_answer_to_head_has_no_body(body):
    """RFC 9110 9.3.2: no content in a response to HEAD, error responses included."""
    client = Client(Limits(max_request_body_size=10))
    client.feed(b"HEAD / HTTP/1.1\r\nHost: x\r\n" + body)
    client.stream.read_body()
    out = client.out()
    assert out.startswith(b"HTTP/1.1 4")
    assert out.endswith(b"\r\n\r\n")


def test_413_through_asgi_gives_disconnect():
    client = Client(Limits(max_request_body_size=10))
    client.feed(post(b"x" * 11))
    cycle = AsgiHttpCycle(client.stream)
    assert cycle.receive() == {"type": "http.disconnect"}
    assert parse_responses(client.out())[0].status == 413


def test_read_body_hands_over_nothing_once_the_request_is_refused():
    """The first read that refuses the request (413) must not hand over the buffered body."""
    client = Client(Limits(max_request_body_size=10))
    client.feed(post(b"x" * 11))
    assert client.stream.read_body() == b""


def test_content_length_at_the_limit_is_fine():
    client = Client(Limits(max_request_body_size=10))
    client.feed(post(b"x" * 10))
    assert read_all(client.stream) == b"x" * 10
    assert not client.conn.should_close


def test_413_for_chunked_once_the_limit_is_exceeded():
    client = Client(Limits(max_request_body_size=10))
    client.feed(chunked_post(b"x" * 6, end=False))
    stream = client.stream
    assert stream.read_body() == b"x" * 6
    client.feed(b"4\r\nyyyy\r\n")
    assert stream.read_body() == b"yyyy"
    assert not stream.aborted
    client.feed(b"1\r\nz\r\n")
    assert stream.aborted
    (response,) = parse_responses(client.out())
    assert response.status == 413
    assert client.conn.should_close


def test_413_for_chunked_already_over_the_limit_when_reading_starts():
    client = Client(Limits(max_request_body_size=10))
    client.feed(chunked_post(b"x" * 20))
    stream = client.stream
    stream.read_body()
    assert stream.aborted
    assert parse_responses(client.out())[0].status == 413


def test_per_request_override_before_reading():
    client = Client(Limits(max_request_body_size=10))
    client.feed(post(b"x" * 50) + post(b"y" * 50))
    stream = client.streams[0]
    assert not stream.is_read_only
    stream.set_max_request_body_size(100)
    assert read_all(stream) == b"x" * 50
    stream.complete(b"ok")
    # The next request starts from the configured limit again.
    second = client.streams[1]
    assert second.max_request_body_size == 10
    second.set_max_request_body_size(None)
    assert read_all(second) == b"y" * 50
    second.complete(b"ok")
    assert [r.status for r in parse_responses(client.out())] == [200, 200]


def test_per_request_override_can_lower_the_limit():
    client = Client()
    client.feed(post(b"x" * 50))
    client.stream.set_max_request_body_size(5)
    client.stream.read_body()
    assert parse_responses(client.out())[0].status == 413


def test_per_request_override_is_refused_after_reading_started():
    client = Client()
    client.feed(post(b"x" * 5))
    stream = client.stream
    stream.read_body()
    assert stream.is_read_only
    with pytest.raises(LocalProtocolError, match="after the app started reading"):
        stream.set_max_request_body_size(100)
    assert stream.max_request_body_size == 30_000_000


def test_negative_override_is_refused():
    client = Client()
    client.feed(post(b"x"))
    with pytest.raises(LocalProtocolError, match=">= 0"):
        client.stream.set_max_request_body_size(-1)


# --- timeouts ----------------------------------------------------------------------------------


def test_keep_alive_timeout_closes_silently():
    limits = Limits(keep_alive_timeout=10.0)
    client = Client(limits, now=100.0)
    assert client.conn.next_deadline() == pytest.approx(110.0)
    client.feed(GET, now=101.0)
    client.stream.complete(b"ok", now=102.0)
    client.out()
    assert client.conn.phase is Phase.IDLE
    assert client.conn.next_deadline() == pytest.approx(112.0)
    client.timer(111.9)
    assert not client.conn.should_close
    client.timer(112.0)
    assert client.conn.should_close
    assert client.out() == b""
    assert client.conn.next_deadline() is None


def test_idle_connection_without_any_request_times_out():
    client = Client(Limits(keep_alive_timeout=5.0), now=0.0)
    client.timer(5.0)
    assert client.conn.should_close
    assert client.out() == b""


def test_request_headers_timeout_answers_408_and_trickling_does_not_reset_it():
    client = Client(Limits(request_headers_timeout=30.0, keep_alive_timeout=100.0), now=0.0)
    head = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    client.feed(head[:1], now=0.0)
    assert client.conn.phase is Phase.HEAD
    assert client.conn.next_deadline() == pytest.approx(30.0)
    for second in range(1, 30):
        client.feed(head[second : second + 1], now=float(second))
        assert client.conn.next_deadline() == pytest.approx(30.0)
        client.timer(float(second))
        assert not client.conn.should_close
    client.timer(30.0)
    assert client.conn.should_close
    (response,) = parse_responses(client.out())
    assert response.status == 408
    assert response.header(b"connection") == b"close"
    assert client.observer.rejections[-1].reason == "request_headers_timeout"


def test_request_headers_timeout_starts_with_the_next_request_after_keep_alive():
    client = Client(Limits(request_headers_timeout=30.0, keep_alive_timeout=100.0), now=0.0)
    client.feed(GET, now=1.0)
    client.stream.complete(b"", now=2.0)
    assert client.conn.next_deadline() == pytest.approx(102.0)
    client.feed(b"GET", now=50.0)
    assert client.conn.next_deadline() == pytest.approx(80.0)


def _body_rate_client(**limits) -> Client:
    limits.setdefault("min_request_body_data_rate", DataRate(bytes_per_second=100, grace_period=5))
    return Client(Limits(**limits), now=0.0)


def test_min_request_body_rate_408_after_grace_when_the_body_trickles():
    client = _body_rate_client()
    client.feed(post(b"", length=10_000), now=0.0)
    stream = client.stream
    stream.read_body(now=0.0)
    assert client.conn.next_deadline() == pytest.approx(5.0)
    for second in range(1, 5):
        client.feed(b"x" * 10, now=float(second))
        stream.read_body(now=float(second))
        client.timer(float(second))
        assert not stream.aborted
    client.timer(5.0)
    assert stream.aborted
    assert client.conn.should_close
    (response,) = parse_responses(client.out())
    assert response.status == 408
    assert client.observer.rejections[-1].reason == "request_body_data_rate"


def test_min_request_body_rate_not_triggered_when_fast_enough():
    client = _body_rate_client()
    client.feed(post(b"", length=3000), now=0.0)
    stream = client.stream
    stream.read_body(now=0.0)
    for second in range(1, 21):
        client.feed(b"x" * 150, now=float(second))
        stream.read_body(now=float(second))
        client.timer(float(second))
        assert not stream.aborted, second
    assert stream.body_complete
    # Once the body is complete there is no body deadline any more.
    assert client.conn.next_deadline() is None
    stream.complete(b"ok", now=21.0)
    assert parse_responses(client.out())[0].status == 200


def test_min_request_body_rate_not_measured_before_the_app_reads():
    client = _body_rate_client()
    client.feed(post(b"", length=10_000), now=0.0)
    assert client.conn.next_deadline() is None
    client.timer(1000.0)
    assert not client.stream.aborted
    assert not client.conn.should_close


def test_min_request_body_rate_paused_while_the_app_does_not_read():
    client = _body_rate_client(max_request_buffer_size=1000)
    client.feed(post(b"", length=100_000), now=0.0)
    stream = client.stream
    stream.read_body(now=0.0)
    client.feed(b"x" * 1500, now=1.0)  # fills the buffer: back-pressure, the clock pauses
    assert not client.conn.wants_read
    assert client.conn.next_deadline() is None
    client.timer(500.0)
    assert not stream.aborted
    # The app reads again at 500 s: the clock resumes with the paused time taken out.
    assert len(stream.read_body(now=500.0)) == 1500
    deadline = client.conn.next_deadline()
    assert deadline is not None
    assert deadline > 500.0
    client.timer(deadline - 0.01)
    assert not stream.aborted


def test_min_request_body_rate_off():
    client = Client(Limits(min_request_body_data_rate=None), now=0.0)
    client.feed(post(b"", length=10_000), now=0.0)
    client.stream.read_body(now=0.0)
    assert client.conn.next_deadline() is None


def test_min_response_data_rate_closes_a_blocked_writer():
    limits = Limits(min_response_data_rate=DataRate(bytes_per_second=1000, grace_period=5))
    client = Client(limits, now=0.0)
    client.feed(GET, now=0.0)
    stream = client.stream
    stream.write(b"x" * 100, now=0.0)
    client.out()
    client.conn.set_write_blocked(True, now=10.0, buffered=20_000)
    assert client.conn.next_deadline() == pytest.approx(30.0)  # max(5, 20000/1000)
    client.timer(29.0)
    assert not client.conn.should_close
    client.timer(30.0)
    assert client.conn.should_close
    assert stream.aborted
    assert client.out() == b"", "nothing more is written to a client that does not read"
    assert client.observer.rejections[-1].reason == "response_data_rate"
    with pytest.raises(ClientDisconnected):
        stream.write(b"more")


def test_min_response_data_rate_uses_grace_for_small_buffers_and_resets_on_unblock():
    limits = Limits(min_response_data_rate=DataRate(bytes_per_second=1000, grace_period=5))
    client = Client(limits, now=0.0)
    client.feed(GET, now=0.0)
    client.conn.set_write_blocked(True, now=1.0, buffered=10)
    assert client.conn.next_deadline() == pytest.approx(6.0)
    client.conn.set_write_blocked(True, now=3.0, buffered=10)  # still blocked: unchanged
    assert client.conn.next_deadline() == pytest.approx(6.0)
    client.conn.set_write_blocked(False, now=4.0)
    assert client.conn.next_deadline() is None
    client.timer(100.0)
    assert not client.conn.should_close


def test_max_request_buffer_size_flips_wants_read():
    client = Client(Limits(max_request_buffer_size=1000))
    assert client.conn.wants_read
    client.feed(post(b"", length=5000))
    stream = client.stream
    client.feed(b"x" * 999)
    assert client.conn.wants_read
    client.feed(b"x" * 600)
    assert not client.conn.wants_read
    assert len(read_all(stream)) == 1599
    assert client.conn.wants_read


def test_max_request_buffer_size_counts_pipelined_bytes():
    client = Client(Limits(max_request_buffer_size=1000))
    client.feed(GET + get(b"/next", b"X-Pad: " + b"p" * 2000))
    assert not client.conn.wants_read
    client.stream.complete(b"")
    assert client.conn.wants_read


# --- graceful shutdown -------------------------------------------------------------------------


def test_shutdown_closes_an_idle_connection_at_once():
    client = Client()
    client.feed(GET)
    client.stream.complete(b"")
    client.out()
    client.conn.shutdown(1.0)
    assert client.conn.should_close
    assert client.out() == b""


def test_shutdown_lets_the_request_in_flight_finish_with_connection_close():
    client = Client()
    client.feed(post(b"hel", length=5))
    stream = client.stream
    client.conn.shutdown(1.0)
    assert not client.conn.should_close
    client.feed(b"lo" + GET)
    assert read_all(stream) == b"hello"
    stream.complete(b"done")
    (response,) = parse_responses(client.out())
    assert response.status == 200
    assert response.header(b"connection") == b"close"
    assert response.body == b"done"
    assert client.conn.should_close
    assert len(client.streams) == 1, "the pipelined request is not started during shutdown"


def test_shutdown_during_a_partial_head_waits_for_it():
    client = Client()
    client.feed(b"GET / HT", now=0.0)
    client.conn.shutdown(1.0)
    # HEAD phase: the request headers timeout still bounds it.
    assert client.conn.next_deadline() == pytest.approx(30.0)
    client.feed(b"TP/1.1\r\nHost: x\r\n\r\n", now=2.0)
    client.stream.complete(b"")
    (response,) = parse_responses(client.out())
    assert response.header(b"connection") == b"close"
    assert client.conn.should_close


def test_connection_lost_aborts_the_request_in_flight():
    client = Client()
    client.feed(post(b"", length=5))
    stream = client.stream
    client.conn.connection_lost(1.0)
    assert stream.aborted
    assert client.conn.should_close
