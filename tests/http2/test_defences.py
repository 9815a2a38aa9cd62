"""Defences against HTTP/2 abuse. Each has a limit, and each test shows the limit holds, the
attacker's connection ends (or its stream), and the server keeps serving other clients: one
connected before the attack (the bystander) and one that connects after it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import h2.exceptions
import pytest
from h2apps import AppState, make_app
from h2client import (
    CONTINUATION,
    DATA,
    END_STREAM,
    GOAWAY,
    HEADERS,
    ErrorCodes,
    H2Client,
    SettingCodes,
    frame,
    get,
    ping_frame,
    request_headers,
    settings_frame,
    window_update_frame,
)
from tiercel.core.config import DataRate, Limits
from tiercel.core.http2 import Http2Limits

LIMITS = Http2Limits()


def still_serving(port: int, bystander: H2Client | None = None) -> None:
    """The server answers a new connection, and the bystander's old one, within 1 s each."""
    started = time.monotonic()
    assert get(port, "/after", timeout=1.0).status == 200
    assert time.monotonic() - started < 1.0
    if bystander is not None:
        stream_id = bystander.request("/after")
        result = bystander.response(stream_id, 1.0)
        assert result.status == 200
        assert bystander.goaway is None


def send_batches(client: H2Client, batches: Any, *, paced: bool = False) -> int:
    """Send each batch of bytes, reading what has arrived in between; stop once the server
    has ended the connection. Returns the number of batches sent.

    Unpaced, the batches go out as fast as the socket takes them: a real flood, but when the
    server closes with part of it unread, its kernel answers with a TCP reset that may destroy
    the GOAWAY on its way (the adapter does no lingering close). Paced, each batch ends with
    a PING and the next waits for its ACK, so the server has read everything sent when it
    decides to close, and its GOAWAY arrives."""
    sent = 0
    for index, batch in enumerate(batches):
        if client.ended:
            break
        barrier = b"barrier%d" % (index % 10)
        if not client.send(batch + (ping_frame(barrier) if paced else b"")):
            break
        sent += 1
        if paced:
            client.read_until(lambda c, b=barrier: c.ended or c.acked(b), 2)
        else:
            client.read_for(0)
    return sent


def calmed_down(client: H2Client, timeout: float = 3.0) -> None:
    client.read_until(lambda c: c.closed, timeout)
    goaway = client.goaway
    assert goaway is not None, "expected GOAWAY(ENHANCE_YOUR_CALM)"
    assert ErrorCodes(goaway.error_code) == ErrorCodes.ENHANCE_YOUR_CALM
    assert client.closed, "the server must close the connection after GOAWAY"


# -- max concurrent streams -----------------------------------------------------------------


def test_max_concurrent_streams_refuses_the_101st_with_refused_stream(
    connect: Callable[..., H2Client], state: AppState
) -> None:
    client = connect(handshake=False)  # h2 has not seen the server's limit: it sends all 101
    streams = [client.request("/block", flush=False) for _ in range(101)]
    client.flush()
    client.read_until(lambda c: streams[-1] in c.resets(), 3)

    assert client.server_settings is not None
    assert client.server_settings[SettingCodes.MAX_CONCURRENT_STREAMS] == 100
    assert client.resets() == {streams[-1]: ErrorCodes.REFUSED_STREAM}
    assert client.goaway is None
    # The first 100 are all running (the app was called for each) and none has answered.
    deadline = time.monotonic() + 2
    while state.calls["/block"] < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert state.calls["/block"] == 100
    assert not any(client.streams[s].done for s in streams[:100])

    state.release.set()
    client.read_until(lambda c: all(c.streams[s].done for s in streams[:100]), 5)
    assert [client.streams[s].status for s in streams[:100]] == [200] * 100
    assert all(bytes(client.streams[s].body) == b"released" for s in streams[:100])
    assert client.goaway is None
    # Slots free again: a new stream runs.
    stream_id = client.request("/")
    assert client.response(stream_id, 2).status == 200


def test_reset_streams_whose_app_still_runs_count_against_the_limit(
    connect: Callable[..., H2Client], state: AppState
) -> None:
    """100 streams reset by the client while their apps still run (CVE-2023-44487's trick):
    a new stream is refused until the apps finish."""
    client = connect()
    streams = [client.request("/block", flush=False) for _ in range(100)]
    client.flush()
    deadline = time.monotonic() + 2
    while state.calls["/block"] < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    for stream_id in streams:
        client.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
    client.flush()
    client.read_for(0.1)
    extra = client.request("/")
    client.read_until(lambda c: extra in c.resets(), 2)
    assert client.resets() == {extra: ErrorCodes.REFUSED_STREAM}
    state.release.set()
    time.sleep(0.1)
    late = client.request("/")
    assert client.response(late, 2).status == 200
    assert client.goaway is None


# -- rapid reset (CVE-2023-44487) and MadeYouReset (CVE-2025-8671) -----------------------------
#
# Each attack opens streams that get reset at once: by the client (rapid reset), or by the
# server because of a stream error the client provoked (MadeYouReset). Either way the server
# counts the resets, and past Http2Limits.max_resets_per_second (200) it says GOAWAY
# (ENHANCE_YOUR_CALM) and closes. The app runs for at most the streams admitted before that.


def rapid_reset(client: H2Client, count: int) -> bytes:
    for _ in range(count):
        stream_id = client.request("/abuse", flush=False)
        client.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
    return client.h2.data_to_send()


def made_you_reset_malformed(client: H2Client, count: int) -> bytes:
    for _ in range(count):
        client.request("/abuse", extra=[(b"X-Upper", b"1")], flush=False)
    return client.h2.data_to_send()


def made_you_reset_content_length(client: H2Client, count: int) -> bytes:
    extra = [(b"content-length", b"10")]
    for _ in range(count):
        client.request("/abuse", "POST", extra=extra, body=b"abc", flush=False)
    return client.h2.data_to_send()


def made_you_reset_window_overflow(client: H2Client, count: int) -> bytes:
    out = b""
    for _ in range(count):
        stream_id = client.request("/abuse", flush=False)
        out += client.h2.data_to_send() + window_update_frame(stream_id, 2**31 - 1)
    return out


def made_you_reset_data_after_end(client: H2Client, count: int) -> bytes:
    out = b""
    for _ in range(count):
        stream_id = client.request("/abuse", flush=False)
        out += client.h2.data_to_send() + frame(DATA, END_STREAM, stream_id, b"late")
    return out


RESET_ATTACKS = {
    "rapid-reset": rapid_reset,
    "made-you-reset-malformed-headers": made_you_reset_malformed,
    "made-you-reset-content-length": made_you_reset_content_length,
    "made-you-reset-window-overflow": made_you_reset_window_overflow,
    "made-you-reset-data-after-end-stream": made_you_reset_data_after_end,
}

GOAWAY_LOST = (
    "BUG: past the reset limit _calm_down queues GOAWAY(ENHANCE_YOUR_CALM) (h2's connection "
    "state becomes CLOSED), but receive_data goes on handling the rest of the batch: the next "
    "RequestReceived reaches _start_stream, whose 'if self._shutting_down or "
    "self._goaway_sent' branch calls self._h2.reset_stream(...); h2 raises ProtocolError "
    "(SEND_RST_STREAM in state CLOSED) out of receive_data, asyncio aborts the transport and "
    "the queued GOAWAY is never sent"
)


def attack(client: H2Client, name: str, *, paced: bool = False) -> int:
    """Up to 50 batches of 100 streams (5000) of the attack; returns the batches sent."""
    build = RESET_ATTACKS[name]

    def generate() -> Any:
        for _ in range(50):
            try:
                batch = build(client, 100)
            except h2.exceptions.ProtocolError:
                if client.ended:  # h2 has seen the server's GOAWAY
                    return
                raise
            yield batch

    return send_batches(client, generate(), paced=paced)


@pytest.mark.parametrize("name", list(RESET_ATTACKS))
def test_reset_attack_is_stopped(
    name: str, connect: Callable[..., H2Client], state: AppState, h2server: Any
) -> None:
    """5000 streams in a tight loop: the attacker's connection ends within a second or two,
    long before all are sent; the app ran for far fewer than 5000 of them; other clients are
    served."""
    bystander = connect()
    client = connect(ignore_stream_limit=True)
    started = time.monotonic()
    sent = attack(client, name)
    client.read_until(lambda c: c.closed, 3)
    assert client.closed
    assert time.monotonic() - started < 3
    # How many batches the attacker managed to write says little: after its GOAWAY the server
    # lingers (reads and discards) for up to 2 s before closing. What counts is that the
    # connection ended and the app ran a bounded number of times (below).
    del sent
    if client.goaway is not None:
        assert ErrorCodes(client.goaway.error_code) == ErrorCodes.ENHANCE_YOUR_CALM
    time.sleep(0.2)
    assert state.calls["/abuse"] <= LIMITS.max_resets_per_second + LIMITS.max_concurrent_streams
    still_serving(h2server.port, bystander)


@pytest.mark.parametrize(
    "name",
    RESET_ATTACKS,
)
def test_reset_attack_gets_goaway_enhance_your_calm(
    name: str, connect: Callable[..., H2Client], state: AppState, h2server: Any
) -> None:
    """The same attack in batches of 100 streams, each batch read by the server before the
    next goes: past 200 resets, GOAWAY(ENHANCE_YOUR_CALM) arrives and the server closes."""
    client = connect(ignore_stream_limit=True)
    sent = attack(client, name, paced=True)
    calmed_down(client)
    assert sent <= 4
    assert len(client.resets()) <= LIMITS.max_resets_per_second + LIMITS.max_concurrent_streams
    assert state.calls["/abuse"] <= LIMITS.max_resets_per_second + LIMITS.max_concurrent_streams
    still_serving(h2server.port)


def test_resets_under_the_rate_limit_are_fine(
    connect: Callable[..., H2Client], state: AppState
) -> None:
    """A client that cancels 80 requests at once (under 200 a second) keeps its connection."""
    client = connect()
    for _ in range(80):
        stream_id = client.request("/slow", flush=False)
        client.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
    client.flush()
    client.read_for(0.2)
    assert client.goaway is None
    stream_id = client.request("/")
    assert client.response(stream_id, 2).status == 200


# -- CONTINUATION flood and HPACK bombs ----------------------------------------------------------


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("payload", [16_384, 0], ids=["16k-junk-frames", "empty-frames"])
def test_continuation_flood_ends_the_connection(
    payload: int, connect: Callable[..., H2Client], h2server: Any
) -> None:
    """HEADERS without END_HEADERS, then CONTINUATION frames that never end the block: 10 MB
    of 16 KB junk frames, or a million empty ones. The server buffers at most a bounded
    header block, ends the connection long before the flood is through, and its memory does
    not grow with the flood."""
    bystander = connect()
    client = connect()
    junk = frame(CONTINUATION, 0, 1, b"\x00" * payload)
    batch = junk * (64 if payload else 1000)
    total = 10 * 1024 * 1024 if payload else 1_000_000 * len(junk)

    rss_before = rss_bytes()
    started = time.monotonic()
    head = frame(HEADERS, END_STREAM, 1, client.h2.encoder.encode(request_headers("/")))
    assert client.send(head)
    sent = send_batches(client, [batch] * (total // len(batch)))
    client.read_until(lambda c: c.closed, 3)

    assert client.ended
    if client.goaway is not None:
        assert ErrorCodes(client.goaway.error_code) in (
            ErrorCodes.PROTOCOL_ERROR,
            ErrorCodes.ENHANCE_YOUR_CALM,
            ErrorCodes.FRAME_SIZE_ERROR,
        )
    assert time.monotonic() - started < 3
    assert sent * len(batch) < total, "the server read the whole flood"
    assert rss_bytes() - rss_before < 64 * 1024 * 1024
    still_serving(h2server.port, bystander)


def hpack_bomb(client: H2Client, copies: int, value_size: int = 4000) -> int:
    """One big header goes into the dynamic table once, then is referenced ``copies`` times
    by one-byte indexed fields: a small header block that decodes to a huge header list.
    h2's encoder does exactly that with repeated fields, and splits the block into HEADERS +
    CONTINUATION frames. Returns the stream id."""
    value = b"A" * value_size
    headers = request_headers("/bomb") + [(b"x-bomb", value)] * copies
    stream_id = client.request(headers=headers, flush=False)
    wire = client.h2.data_to_send()
    assert len(wire) < value_size + 2 * copies + 200  # it really is compressed
    client.send(wire)
    return stream_id


def test_hpack_bomb_is_refused(
    connect: Callable[..., H2Client], state: AppState, h2server: Any
) -> None:
    """4000 references to a 4 KB header: 16 MB decoded from an 8 KB block. The decoder stops
    at twice max_header_list_size (64 KB) and the connection gets GOAWAY."""
    bystander = connect()
    client = connect()
    rss_before = rss_bytes()
    stream_id = hpack_bomb(client, 4000)
    client.read_until(lambda c: c.ended or c.streams[stream_id].done, 3)

    if client.goaway is not None:
        assert ErrorCodes(client.goaway.error_code) in (
            ErrorCodes.COMPRESSION_ERROR,
            ErrorCodes.ENHANCE_YOUR_CALM,
        )
    else:
        result = client.streams[stream_id]
        assert result.status == 431 or result.reset is not None
    assert state.calls["/bomb"] == 0
    assert rss_bytes() - rss_before < 64 * 1024 * 1024
    still_serving(h2server.port, bystander)


def test_header_list_over_the_request_limits_gets_431(
    connect: Callable[..., H2Client], state: AppState
) -> None:
    """A header list over Limits.max_request_headers_total_size (32 KB) but within what the
    decoder accepts: the stream gets 431 and the connection carries on."""
    client = connect()
    stream_id = hpack_bomb(client, 12, 3000)  # about 36 KB decoded
    result = client.response(stream_id, 3)
    assert result.status == 431
    assert client.goaway is None
    assert state.calls["/bomb"] == 0
    stream_id = client.request("/")
    assert client.response(stream_id, 2).status == 200


def test_too_many_header_fields_gets_431(connect: Callable[..., H2Client], state: AppState) -> None:
    client = connect()
    headers = request_headers("/bomb", extra=[(f"x-{i}", "1") for i in range(150)])
    stream_id = client.request(headers=headers)
    assert client.response(stream_id, 3).status == 431
    assert client.goaway is None
    assert state.calls["/bomb"] == 0


# -- SETTINGS, PING and empty-frame floods -----------------------------------------------------

FLOODS = {
    "settings": settings_frame({SettingCodes.MAX_HEADER_LIST_SIZE: 65_536}),
    "empty-settings": settings_frame(),
    "ping": ping_frame(),
}


@pytest.mark.parametrize("kind", list(FLOODS))
def test_flood_is_stopped(kind: str, connect: Callable[..., H2Client], h2server: Any) -> None:
    """10,000 frames as fast as the socket takes them: the connection ends within a second
    (with GOAWAY(ENHANCE_YOUR_CALM), when the TCP reset does not overtake it) and other
    clients are served."""
    bystander = connect()
    client = connect()
    started = time.monotonic()
    send_batches(client, [FLOODS[kind] * 1000] * 10)
    client.read_until(lambda c: c.closed, 3)
    assert client.closed
    assert time.monotonic() - started < 2
    if client.goaway is not None:
        assert ErrorCodes(client.goaway.error_code) == ErrorCodes.ENHANCE_YOUR_CALM
    still_serving(h2server.port, bystander)


@pytest.mark.parametrize("kind", list(FLOODS))
def test_flood_gets_enhance_your_calm(kind: str, connect: Callable[..., H2Client]) -> None:
    """Up to 10,000 frames in bursts of 100, each read by the server before the next: past
    50 a second, GOAWAY(ENHANCE_YOUR_CALM), and nothing after it."""
    client = connect()
    sent = send_batches(client, [FLOODS[kind] * 100] * 100, paced=True)
    calmed_down(client)
    assert sent == 1
    assert client.frames[-1].kind == GOAWAY


def test_empty_data_frame_flood_gets_enhance_your_calm(
    connect: Callable[..., H2Client], h2server: Any
) -> None:
    """Empty DATA frames cost the server work and move no data: past 1000 a second, GOAWAY."""
    bystander = connect()
    client = connect()
    stream_id = client.request("/upload", "POST", end_stream=False)
    sent = send_batches(client, [frame(DATA, 0, stream_id, b"") * 500] * 40, paced=True)
    calmed_down(client)
    assert sent == 3
    still_serving(h2server.port, bystander)


def test_pings_under_the_limit_are_answered(connect: Callable[..., H2Client]) -> None:
    client = connect()
    client.send(ping_frame(b"abcdefgh") * 20)
    client.read_until(lambda c: sum(f.kind == 6 and f.flags & 1 for f in c.frames) >= 20, 2)
    acks = [f for f in client.frames if f.kind == 6 and f.flags & 1]
    assert len(acks) == 20
    assert all(f.payload == b"abcdefgh" for f in acks)
    assert client.goaway is None


# -- zero-window stalls and slow streams ----------------------------------------------------------

STALL_LIMITS = Limits(min_response_data_rate=DataRate(240, 0.5))


@pytest.fixture
def stall_server(serve: Callable[..., Any], state: AppState) -> Any:
    server = serve(make_app(state), limits=STALL_LIMITS, lifespan="off", shutdown_timeout=3.0)
    yield server
    state.release.set()


@pytest.fixture
def stall_clients(stall_server: Any) -> Any:
    clients: list[H2Client] = []

    def open_client(**kwargs: Any) -> H2Client:
        client = H2Client(stall_server.port, **kwargs)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


def zero_window_stall(stall_clients: Any, size: int, wait: float) -> tuple[H2Client, int, int]:
    client = stall_clients(settings={SettingCodes.INITIAL_WINDOW_SIZE: 0})
    stalled = client.request(f"/big?n={size}")
    other = client.request(f"/big?n={size}&key=other")
    client.grant(other, 1_000_000)  # this stream gets a window; the first never does
    client.read_until(lambda c: c.streams[stalled].reset is not None, wait)
    return client, stalled, other


def test_zero_window_stall_resets_the_stream(
    stall_clients: Any, stall_server: Any, state: AppState
) -> None:
    """INITIAL_WINDOW_SIZE=0 and a response of 600 bytes: the headers come, no data; a stream
    held back by flow control must average the minimum rate over the time it is held back,
    counting bytes that really went out, so with none it is reset (CANCEL) once the 0.5 s grace
    has passed instead of being held (with its app) forever. A stream on the same connection
    with a window gets its whole response."""
    bystander = stall_clients()
    started = time.monotonic()
    client, stalled, other = zero_window_stall(stall_clients, 600, 5)
    elapsed = time.monotonic() - started

    assert client.streams[stalled].status == 200
    assert client.streams[stalled].body == b""
    assert client.streams[stalled].reset == ErrorCodes.CANCEL
    assert 0.4 < elapsed < 2.0
    assert client.streams[other].status == 200
    assert len(client.streams[other].body) == 600
    assert client.goaway is None
    stream_id = bystander.request("/")
    assert bystander.response(stream_id, 1).status == 200
    assert get(stall_server.port, timeout=1).status == 200


def test_zero_window_stall_of_a_large_response_is_reset_within_seconds(
    stall_clients: Any,
) -> None:
    client, stalled, other = zero_window_stall(stall_clients, 100_000, 3)
    assert client.streams[stalled].status == 200
    assert client.streams[stalled].body == b""
    assert len(client.streams[other].body) == 100_000
    assert client.streams[stalled].reset == ErrorCodes.CANCEL


def test_trickled_window_is_held_to_the_minimum_data_rate(stall_clients: Any) -> None:
    client = stall_clients(settings={SettingCodes.INITIAL_WINDOW_SIZE: 0}, credit=False)
    stalled = client.request("/big?n=600")
    client.read_until(lambda c: c.streams[stalled].status is not None, 2)
    for _ in range(4):  # 3.2 s at 1 byte each 0.8 s: the data rate is about 1 B/s
        if client.streams[stalled].done:
            break
        client.grant(stalled, 1)
        client.read_for(0.8)
    assert client.streams[stalled].reset == ErrorCodes.CANCEL


def test_slow_stream_does_not_stall_another_stream(
    connect: Callable[..., H2Client], state: AppState
) -> None:
    """Stream A's app streams 1 MB in 16 KB pieces; the client never opens A's window beyond
    the initial 64 KB (it credits only the connection). Stream B on the same connection gets
    its whole 300 KB response meanwhile."""
    client = connect()
    slow = client.request("/big?n=1000000&c=16384&d=0.005&key=A")
    client.hold.add(slow)
    fast = client.request("/big?n=300000&c=16384&key=B")
    client.read_until(lambda c: c.streams[fast].done, 5)

    assert client.streams[fast].status == 200
    assert client.streams[fast].ended
    assert len(client.streams[fast].body) == 300_000
    # A gets its initial window's worth, and not a byte more.
    client.read_until(lambda c: len(c.streams[slow].body) >= 65_535, 2)
    client.read_for(0.1)
    assert len(client.streams[slow].body) == 65_535
    assert not client.streams[slow].done
    assert client.goaway is None


def test_app_send_waits_while_its_stream_buffer_is_full(
    connect: Callable[..., H2Client], state: AppState
) -> None:
    client = connect()
    slow = client.request("/big?n=1000000&c=16384&key=A")
    client.hold.add(slow)
    client.read_for(1.0)
    assert len(client.streams[slow].body) == 65_535
    # What the app has been allowed to write: the window, plus at most one buffer's worth.
    assert state.sent["A"] <= 65_535 + Limits().max_response_buffer_size + 16_384


def test_concurrent_upload_completes_while_another_upload_waits_for_its_app(
    connect: Callable[..., H2Client], state: AppState
) -> None:
    """Stream A's app waits 1 s before it reads, so A's 768 KB stream window fills up; a
    400 KB POST on stream B, more than the connection window A leaves, completes meanwhile:
    the connection window is credited as bytes arrive, not as the slow app reads them."""
    client = connect()
    big = client.request("/upload?key=A&wait=1.0", "POST", end_stream=False)
    sent_first = client.upload(big, b"a" * 1_000_000, end_stream=False, timeout=0.3)
    assert sent_first == LIMITS.initial_stream_window_size  # A's window is full
    small = client.request("/upload?key=B", "POST", end_stream=False)
    started = time.monotonic()
    assert client.upload(small, b"b" * 400_000, timeout=1) == 400_000
    client.read_until(lambda c: c.streams[small].done, 1)
    assert client.streams[small].status == 200
    assert bytes(client.streams[small].body) == b"400000"
    assert time.monotonic() - started < 0.7
    assert "A:reading" not in state.times, "B should finish while A's app is still waiting"

    client.upload(big, b"", timeout=1)  # A ends; its app reads all of it
    result = client.response(big, 2)
    assert result.status == 200
    assert bytes(result.body) == str(sent_first).encode()
    assert client.goaway is None


WINDOW_NEVER_CREDITED = (
    "BUG: the inbound connection window stops being credited after ~2.36 MB of request "
    "bodies per connection: Http2Protocol._credit_connection calls "
    "_inbound_flow_control_window_manager.process_bytes(size), which already adds the "
    "increment to the manager's current_window_size, and then "
    "h2conn.increment_flow_control_window(increment), whose window_opened() adds it again "
    "(and raises max_window_size); the manager's view runs ahead of the peer's real window "
    "until it never emits a WINDOW_UPDATE again, and every upload on the connection stalls"
)


def test_large_upload_and_a_concurrent_request_on_the_same_connection(
    connect: Callable[..., H2Client], state: AppState
) -> None:
    """A 5 MB upload whose app reads slowly, and a small POST on another stream meanwhile:
    both complete."""
    client = connect()
    big = client.request("/upload?key=A&d=0.01", "POST", end_stream=False)
    sent_first = client.upload(big, b"a" * 1_000_000, end_stream=False, timeout=0.3)
    small = client.request("/upload?key=B", "POST", body=b"b" * 10_000)
    assert client.response(small, 1).status == 200
    assert bytes(client.streams[small].body) == b"10000"
    rest = 5_000_000 - sent_first
    assert client.upload(big, b"a" * rest, timeout=1.5) == rest
    result = client.response(big, 2)
    assert result.status == 200
    assert bytes(result.body) == b"5000000"


def test_many_uploads_in_a_row_on_one_connection(connect: Callable[..., H2Client]) -> None:
    """Twelve 500 KB uploads one after the other, each read at once by its app."""
    client = connect()
    for _ in range(12):
        stream_id = client.request("/upload", "POST", end_stream=False)
        assert client.upload(stream_id, b"u" * 500_000, timeout=1) == 500_000
        assert bytes(client.response(stream_id, 1).body) == b"500000"
