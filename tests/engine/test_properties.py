"""Property tests for the HTTP/1.1 engine (through ``open_connection``, so the h2-preface
sniffer in front of it is exercised too).

* Any bytes, in any pieces: the engine never raises, everything it sends is a sequence of
  well-framed ``HTTP/1.1`` responses, and once the peer has closed, the connection closes.
* Valid requests with random mutations (insert, delete, replace bytes): the same.
* Valid requests split at random points: what the app sees (method, target, headers, body) and
  the bytes sent back are exactly those of the unsplit request, and match what was generated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine_harness import Client, EchoDriver, parse_responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Header names the generator leaves alone because they change framing or connection handling.
RESERVED = {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade"}
PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/"
VALUE_BYTES = [b for b in range(0x21, 0x7F)] + [0x80, 0xA0, 0xC3, 0xE9, 0xFF]

tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
methods = st.one_of(
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"]),
    tokens.filter(lambda m: m.upper() not in ("CONNECT", "PRI")),
)


@st.composite
def targets(draw: st.DrawFn) -> bytes:
    path = "/" + draw(st.text(PATH_CHARS, max_size=30))
    path += "".join(draw(st.lists(st.sampled_from(["%20", "%2F", "%e9", "%00"]), max_size=2)))
    if draw(st.booleans()):
        path += "?" + draw(st.text(PATH_CHARS + "?", max_size=20))
    return path.encode("ascii")


@st.composite
def field_values(draw: st.DrawFn) -> bytes:
    words = draw(st.lists(st.binary(min_size=1, max_size=8), max_size=4))
    parts = [bytes(VALUE_BYTES[b % len(VALUE_BYTES)] for b in word) for word in words]
    seps = [draw(st.sampled_from([b" ", b"\t", b"  ", b" \t"])) for _ in parts]
    return b"".join(sep + part for sep, part in zip(seps, parts, strict=True)).strip(b" \t")


@dataclass
class Request:
    method: str
    target: bytes
    headers: list[tuple[bytes, bytes, bytes, bytes]]  # name, OWS before, value, OWS after
    body: bytes
    framing: str  # "none", "length" or "chunked"
    chunk_sizes: list[int]
    extension: bytes
    trailers: list[tuple[bytes, bytes]]

    def serialize(self) -> bytes:
        lines = [b"%s %s HTTP/1.1" % (self.method.encode(), self.target)]
        lines += [name + b":" + pre + value + post for name, pre, value, post in self.headers]
        out = b"\r\n".join(lines) + b"\r\n\r\n"
        if self.framing == "length":
            return out + self.body
        if self.framing == "chunked":
            pos = 0
            for size in self.chunk_sizes:
                chunk = self.body[pos : pos + size]
                pos += size
                out += b"%x%s\r\n%s\r\n" % (len(chunk), self.extension, chunk)
            out += b"0\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in self.trailers)
            out += b"\r\n"
        return out

    def seen(self) -> tuple[str, bytes, list[tuple[bytes, bytes]], bytes]:
        """What the app must see."""
        headers = [(name.lower(), value) for name, _, value, _ in self.headers]
        return self.method, self.target, headers, self.body


ows = st.sampled_from([b"", b" ", b"\t", b"  ", b" \t "])


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(methods)
    target = draw(targets())
    names = draw(
        st.lists(tokens.filter(lambda n: n.lower() not in RESERVED), max_size=6).map(
            lambda ns: [n.encode() for n in ns]
        )
    )
    host_at = draw(st.integers(0, len(names)))
    host = draw(st.sampled_from([b"x", b"example.com", b"example.com:8080", b"[::1]:80"]))
    header_names = [*names[:host_at], draw(st.sampled_from([b"Host", b"host", b"HOST"]))]
    header_names += names[host_at:]
    headers = []
    for name in header_names:
        value = host if name.lower() == b"host" else draw(field_values())
        headers.append((name, draw(ows), value, draw(ows)))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = b"" if framing == "none" else draw(st.binary(max_size=300))
    chunk_sizes: list[int] = []
    extension = b""
    trailers: list[tuple[bytes, bytes]] = []
    if framing == "length":
        name = draw(st.sampled_from([b"Content-Length", b"content-length"]))
        headers.append((name, draw(ows), str(len(body)).encode(), draw(ows)))
    elif framing == "chunked":
        name = draw(st.sampled_from([b"Transfer-Encoding", b"transfer-encoding"]))
        value = draw(st.sampled_from([b"chunked", b"Chunked"]))
        headers.append((name, draw(ows), value, draw(ows)))
        left = len(body)
        while left:
            size = draw(st.integers(1, left))
            chunk_sizes.append(size)
            left -= size
        extension = draw(st.sampled_from([b"", b";a", b";a=b", b';name="quoted value"']))
        trailers = [
            (n.encode(), draw(field_values()))
            for n in draw(st.lists(tokens.filter(lambda n: n.lower() not in RESERVED), max_size=2))
        ]
    return Request(method, target, headers, body, framing, chunk_sizes, extension, trailers)


pipelines = st.lists(requests(), min_size=1, max_size=3)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[last:point])
        last = point
    return [p for p in pieces if p]


def run(pieces: list[bytes], *, then_close: bool = True) -> EchoDriver:
    """Feed the pieces one by one; the engine must not raise, and while the connection is
    open it must always have a deadline (the app here reads and answers at once, so nothing
    is waiting on the app: a connection without a deadline could be held open forever)."""
    driver = EchoDriver(Client(via_open_connection=True))
    conn = driver.client.conn
    for index, piece in enumerate(pieces):
        driver.feed(piece, now=float(index) * 0.001)
        assert conn.should_close or conn.next_deadline() is not None, conn
    if then_close:
        driver.feed(b"", now=1.0)
        driver.timer(1e9)
    return driver


def check_output(driver: EchoDriver) -> None:
    output = bytes(driver.output)
    if not output:
        return
    assert output.startswith(b"HTTP/1.1 "), output[:100]
    # Only answered requests have app responses; an error response (if any) comes last, and
    # answers the last request the app saw if that one was cut off (no body if it was HEAD).
    answered = [s.method for s in driver.seen if not s.disconnected]
    methods = list(answered)
    if driver.seen and driver.seen[-1].disconnected:
        methods.append(driver.seen[-1].method)
    responses = parse_responses(output, methods=methods)
    finals = [r for r in responses if r.status >= 200]
    assert len(finals) >= len(answered)
    assert len(finals) <= len(answered) + 1
    for response in finals[len(answered) :]:
        assert response.status >= 400
        assert response.header(b"connection") == b"close"


def final_status_lines(driver: EchoDriver) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 [2-9][^\r\n]*", bytes(driver.output))


# --- any bytes -----------------------------------------------------------------------------------

PREFIXES = [
    b"",
    b"GET / HTTP/1.1\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
]
ALPHABET = [b"\r\n", b"\r", b"\n", b" ", b"\t", b":", b";", b",", b"0", b"a", b"\x00", b"\xff"]


@SETTINGS
@given(
    prefix=st.sampled_from(PREFIXES),
    noise=st.one_of(
        st.binary(max_size=600),
        st.lists(st.sampled_from(ALPHABET), max_size=80).map(b"".join),
    ),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_any_bytes_never_raise_and_answers_are_well_framed(prefix, noise, cuts):
    data = prefix + noise
    driver = run(split(data, cuts))
    if not data.startswith(H2_PREFACE):  # hypothesis does find it: that is prior-knowledge h2c
        check_output(driver)
    assert driver.client.conn.should_close, "the peer closed: so must the engine"


# --- mutated valid requests ----------------------------------------------------------------------

INTERESTING = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\x00",
    b"\x0b",
    b"\x7f",
    b"\xff",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"0",
    b"f",
    b"-",
    b"+",
    b"#",
    b"\r\n ",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Host: y\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: close\r\n",
]


@st.composite
def mutated_pipelines(draw: st.DrawFn) -> bytes:
    data = bytearray(b"".join(r.serialize() for r in draw(pipelines)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        pos = draw(st.integers(0, len(data)))
        new = draw(st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=3)))
        if kind == "insert":
            data[pos:pos] = new
        elif kind == "delete":
            data[pos : pos + draw(st.integers(1, 4))] = b""
        else:
            data[pos : pos + len(new)] = new
    return bytes(data)


@SETTINGS
@given(data=mutated_pipelines(), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_mutated_requests_never_raise_and_answers_are_well_framed(data, cuts):
    driver = run(split(data, cuts))
    check_output(driver)
    assert driver.client.conn.should_close


@SETTINGS
@given(data=mutated_pipelines())
def test_mutated_requests_give_the_same_answer_whole_and_byte_by_byte(data):
    whole = run([data])
    trickled = run([data[i : i + 1] for i in range(len(data))])
    # Same final responses; only an error body's wording may differ (which check fired first),
    # and 100 Continue depends on whether the body had arrived when the app first read.
    assert final_status_lines(trickled) == final_status_lines(whole)
    # How much of a body an app reads before a framing error is found depends on the pieces;
    # a complete body (and everything else the app sees) does not.
    assert summary(trickled) == summary(whole)


def summary(driver: EchoDriver) -> list[tuple[object, ...]]:
    return [
        (s.method, s.target, s.headers, None if s.disconnected else s.body, s.disconnected)
        for s in driver.seen
    ]


# --- valid requests, split anywhere --------------------------------------------------------------


@SETTINGS
@given(pipeline=pipelines, cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_valid_requests_split_anywhere_parse_the_same(pipeline, cuts):
    data = b"".join(r.serialize() for r in pipeline)
    whole = run([data], then_close=False)
    pieces = run(split(data, cuts), then_close=False)

    expected = [r.seen() for r in pipeline]
    assert [(s.method, s.target, s.headers, s.body) for s in whole.seen] == expected
    assert [(s.method, s.target, s.headers, s.body) for s in pieces.seen] == expected
    assert bytes(pieces.output) == bytes(whole.output)
    responses = parse_responses(bytes(whole.output), methods=[r.method for r in pipeline])
    assert [r.status for r in responses] == [200] * len(pipeline)
    assert not whole.client.conn.should_close
    assert not pieces.client.conn.should_close


@SETTINGS
@given(pipeline=pipelines)
def test_valid_requests_byte_by_byte(pipeline):
    data = b"".join(r.serialize() for r in pipeline)
    driver = run([data[i : i + 1] for i in range(len(data))], then_close=False)
    assert [(s.method, s.target, s.headers, s.body) for s in driver.seen] == [
        r.seen() for r in pipeline
    ]
