"""RFC 9113 8.1.1: a malformed request is a stream error. The server resets that stream with
RST_STREAM(PROTOCOL_ERROR) and nothing else: another stream in flight on the same connection
completes, and the connection takes new streams afterwards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from h2.events import ConnectionTerminated, StreamReset
from h2apps import SLOW_BODY
from h2client import DATA, RST_STREAM, ErrorCodes, H2Client, StreamResult, frame, request_headers

BASE = request_headers("/m")


def without(name: bytes) -> list[tuple[bytes, bytes]]:
    return [(n, v) for n, v in BASE if n != name]


@dataclass
class Case:
    headers: list[tuple[bytes, bytes]]
    body: list[bytes] | None = None  # DATA frames; the last one carries END_STREAM
    app_may_run: bool = False  # body errors surface after the request was handed to the app


def extra(*pairs: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return BASE + list(pairs)


POST = request_headers("/m", "POST")

# The cases the issue names; each runs next to a slow good stream on its own connection.
CASES = {
    "uppercase-name": Case(extra((b"X-Upper", b"1"))),
    "connection-keep-alive": Case(extra((b"connection", b"keep-alive"))),
    "te-gzip": Case(extra((b"te", b"gzip"))),
    "missing-path": Case(without(b":path")),
    "missing-method": Case(without(b":method")),
    "duplicate-method": Case([BASE[0], (b":method", b"POST"), *BASE[1:]]),
    "pseudo-after-regular": Case([*BASE[:3], (b"x-a", b"1"), BASE[3]]),
    "unknown-pseudo": Case(extra((b":foo", b"bar"))),
    "crlf-in-value": Case(extra((b"x-a", b"a\r\nTransfer-Encoding: chunked"))),
    "nul-in-value": Case(extra((b"x-a", b"a\x00b"))),
    "leading-space-in-value": Case(extra((b"x-a", b" a"))),
    "trailing-space-in-value": Case(extra((b"x-a", b"a "))),
    "path-without-slash": Case([*BASE[:3], (b":path", b"m")]),
    "content-length-mismatch": Case(
        [*POST, (b"content-length", b"10")], [b"abc"], app_may_run=True
    ),
    "content-length-exceeded-later": Case(
        [*POST, (b"content-length", b"5")], [b"abc", b"defgh"], app_may_run=True
    ),
    "content-length-plus-sign": Case([*POST, (b"content-length", b"+5")], [b"abcde"]),
}

# More of the same, checked together on one connection (cheaper than one server each).
MORE_CASES = {
    "uppercase-pseudo": Case([(b":METHOD", b"GET"), *BASE[1:]]),
    "keep-alive": Case(extra((b"keep-alive", b"timeout=5"))),
    "proxy-connection": Case(extra((b"proxy-connection", b"close"))),
    "transfer-encoding": Case(extra((b"transfer-encoding", b"chunked"))),
    "upgrade": Case(extra((b"upgrade", b"websocket"))),
    "te-trailers-gzip": Case(extra((b"te", b"trailers, gzip"))),
    "missing-scheme": Case(without(b":scheme")),
    "duplicate-path": Case([*BASE, (b":path", b"/other")]),
    "duplicate-scheme": Case([*BASE, (b":scheme", b"http")]),
    "response-pseudo-in-request": Case([(b":status", b"200"), *BASE]),
    "protocol-without-connect": Case([*BASE, (b":protocol", b"websocket")]),
    "lf-in-value": Case(extra((b"x-a", b"a\nb"))),
    "cr-in-value": Case(extra((b"x-a", b"a\rb"))),
    "trailing-tab-in-value": Case(extra((b"x-a", b"a\t"))),
    "space-in-name": Case(extra((b"x a", b"1"))),
    "colon-in-name": Case(extra((b"x:a", b"1"))),
    "empty-name": Case(extra((b"", b"1"))),
    "empty-path": Case([*BASE[:3], (b":path", b"")]),
    "asterisk-path-with-get": Case([*BASE[:3], (b":path", b"*")]),
    "space-in-path": Case([*BASE[:3], (b":path", b"/a b")]),
    "wrong-scheme": Case([BASE[0], (b":scheme", b"https"), *BASE[2:]]),
    "content-length-empty-body": Case([*POST, (b"content-length", b"10")], [b""], app_may_run=True),
    "content-length-negative": Case([*POST, (b"content-length", b"-1")], [b""]),
    "content-length-not-a-number": Case([*POST, (b"content-length", b"abc")], [b"abc"]),
    "content-length-conflicting": Case(
        [*POST, (b"content-length", b"3"), (b"content-length", b"4")], [b"abc"]
    ),
}


def send_case(client: H2Client, case: Case) -> int:
    stream_id = client.request(headers=case.headers, end_stream=case.body is None, flush=False)
    for index, chunk in enumerate(case.body or []):
        client.h2.send_data(stream_id, chunk, end_stream=index == len(case.body) - 1)
    client.flush()
    return stream_id


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_request_resets_only_its_stream(
    name: str, connect: Callable[..., H2Client], state
) -> None:
    case = CASES[name]
    client = connect()
    good = client.request("/slow")  # stream 1: its app answers after 0.3 s
    bad = send_case(client, case)  # stream 3

    events = client.read_until(lambda c: c.streams[good].done and c.streams[bad].done, 5)

    assert client.resets() == {bad: ErrorCodes.PROTOCOL_ERROR}
    assert [(e.stream_id, e.error_code) for e in events if isinstance(e, StreamReset)] == [
        (bad, ErrorCodes.PROTOCOL_ERROR)
    ]
    assert not [e for e in events if isinstance(e, ConnectionTerminated)]
    assert client.streams[bad].status is None
    slow = client.streams[good]
    assert slow.status == 200
    assert slow.ended
    assert bytes(slow.body) == SLOW_BODY
    assert client.goaway is None
    assert not client.closed

    # The connection carries on: a new stream on it gets its answer.
    after = client.request("/after")
    result = client.response(after, 3)
    assert result.status == 200
    assert bytes(result.body) == b"ok /after 0"
    assert after == 5
    assert client.goaway is None
    if not case.app_may_run:
        assert state.calls["/m"] == 0, "the app must never see a malformed request"


@pytest.mark.parametrize("names", [list(MORE_CASES)], ids=["all"])
def test_more_malformed_requests_each_reset_alone(
    names: list[str], connect: Callable[..., H2Client], state
) -> None:
    """Each further malformed request on its own stream, between good streams, while a slow
    good stream is in flight: each bad one is reset with PROTOCOL_ERROR, nothing else is."""
    client = connect()
    slow = client.request("/slow")
    good, bad = [], {}
    for name in names:
        bad[send_case(client, MORE_CASES[name])] = name
        good.append(client.request("/x"))
    client.read_until(lambda c: all(c.streams[s].done for s in [slow, *good, *bad]), 5)

    resets = client.resets()
    assert {bad[s]: resets.get(s) for s in bad} == {
        name: ErrorCodes.PROTOCOL_ERROR for name in names
    }
    assert set(resets) == set(bad)
    assert all(client.streams[s].status == 200 for s in good)
    assert client.streams[slow].status == 200
    assert bytes(client.streams[slow].body) == SLOW_BODY
    assert client.goaway is None
    assert state.calls["/x"] == len(good)
    assert state.calls["/m"] <= sum(MORE_CASES[n].app_may_run for n in names)


def upload_after(client: H2Client, size: int = 100_000) -> StreamResult:
    stream_id = client.request("/upload", "POST", end_stream=False)
    assert client.upload(stream_id, b"y" * size, timeout=2) == size, "the upload stalled"
    return client.response(stream_id, 3)


def test_body_of_a_reset_malformed_request_is_credited_to_the_connection(
    connect: Callable[..., H2Client],
) -> None:
    """70 malformed POSTs, each with a 16 KB body the server throws away (more than the whole
    1 MB connection window in total): the connection window is credited back for every byte,
    so an upload afterwards on the same connection goes through."""
    client = connect()
    for _ in range(70):
        client.request("/m", "POST", extra=[(b"X-Upper", b"1")], body=b"x" * 16_384, flush=False)
        client.flush()
        client.read_for(0.005)  # spread over > 0.35 s: under the reset rate limit
    client.read_for(0.2)
    assert len(client.resets(ErrorCodes.PROTOCOL_ERROR)) == 70
    assert client.goaway is None
    result = upload_after(client)
    assert result.status == 200
    assert bytes(result.body) == b"100000"


def test_body_of_a_content_length_mismatch_is_credited_to_the_connection(
    connect: Callable[..., H2Client],
) -> None:
    client = connect()
    for _ in range(70):
        if client.h2.outbound_flow_control_window < 16_384:
            break
        client.request(
            "/m", "POST", extra=[(b"content-length", b"1")], body=b"x" * 16_384, flush=False
        )
        client.flush()
        client.read_for(0.005)
    client.read_for(0.2)
    assert len(client.resets(ErrorCodes.PROTOCOL_ERROR)) >= 64
    assert client.goaway is None
    result = upload_after(client)
    assert result.status == 200
    assert bytes(result.body) == b"100000"


def test_frames_on_a_stream_the_server_reset_are_ignored(
    connect: Callable[..., H2Client],
) -> None:
    client = connect()
    bad = client.request("/m", "POST", extra=[(b"X-Upper", b"1")], end_stream=False)
    client.read_until(lambda c: bad in c.resets(), 2)
    for _ in range(5):  # in flight before the client saw the reset, as far as the server knows
        client.send(frame(DATA, 0, bad, b"abc"))
    client.read_for(0.3)
    rst_frames = [f for f in client.frames if f.kind == RST_STREAM and f.stream_id == bad]
    assert [f.error_code for f in rst_frames] == [ErrorCodes.PROTOCOL_ERROR]
    assert client.goaway is None
