"""Property tests for the HTTP/2 engine: arbitrary frame sequences, split at arbitrary points.

Whatever a client sends, the engine answers with whole frames and never raises, starting with
its SETTINGS; once it has sent a GOAWAY with an error code it closes and reads no more. Most
frames are what a correct client sends (requests, bodies, window updates, resets, pings); the
rest are drawn from the shapes a broken one can produce: every frame type, odd and even and huge
stream ids, padding, priority fields, SETTINGS values on both sides of their limits, truncated
HPACK blocks, wrong lengths.
"""

from __future__ import annotations

import struct

import hpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiercel.core import ServerContext, TransportInfo
from tiercel.core.events import RequestReceived
from tiercel.core.http2 import PREFACE, Http2Limits, Http2Protocol
from tiercel.core.stream import ClientDisconnected, HttpStream

TRANSPORT = TransportInfo(("127.0.0.1", 8000), ("127.0.0.1", 50000))
GOAWAY = 7

stream_ids = st.sampled_from([0, 1, 2, 3, 5, 7, 9, 2**31 - 1])
flag_sets = st.sampled_from([0, 0x1, 0x4, 0x5, 0x8, 0x9, 0x20, 0x24, 0x25, 0x2D, 0xFF])
request_blocks = st.sampled_from(
    [
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")],
        [(":method", "POST"), (":scheme", "http"), (":path", "/u"), ("content-length", "3")],
        [(":method", "GET"), (":path", "/")],  # malformed: no :scheme
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), ("Upper", "x")],
        [("x-trailer", "1")],
        [(":method", "HEAD"), (":scheme", "http"), (":path", "*")],
    ]
)


@st.composite
def frames(draw: st.DrawFn, encoder: hpack.Encoder) -> bytes:
    """Any frame at all, valid or not."""
    kind = draw(st.sampled_from([0, 0, 1, 1, 1, 2, 3, 4, 4, 5, 6, 7, 8, 8, 9, 0xBB]))
    flags = draw(flag_sets)
    stream_id = draw(stream_ids)
    if kind in (1, 9):
        payload = encoder.encode(draw(request_blocks))
        if draw(st.booleans()):
            payload = payload[: draw(st.integers(0, len(payload)))]
        if kind == 1 and flags & 0x20:
            payload = struct.pack(">IB", draw(st.sampled_from([0, stream_id])), 1) + payload
        if kind == 1 and flags & 0x8:
            payload = bytes([draw(st.integers(0, 30))]) + payload + b"\0" * draw(st.integers(0, 5))
    elif kind == 0:
        payload = b"d" * draw(st.sampled_from([0, 1, 3, 1000, 16_384]))
        if flags & 0x8:
            payload = bytes([draw(st.integers(0, 255))]) + payload
    elif kind == 4:
        pairs = draw(
            st.lists(
                st.tuples(
                    st.sampled_from([1, 2, 3, 4, 5, 6, 8, 0x77]),
                    st.sampled_from([0, 1, 2, 10, 16_384, 65_535, 2**31 - 1, 2**31, 2**24]),
                ),
                max_size=3,
            )
        )
        payload = b"".join(struct.pack(">HI", k, v) for k, v in pairs)
    elif kind == 8:
        payload = struct.pack(">I", draw(st.sampled_from([0, 1, 1000, 2**31 - 1, 2**32 - 1])))
    elif kind in (3, 6, 7, 2):
        size = {3: 4, 6: 8, 7: 8, 2: 5}[kind]
        payload = draw(st.binary(min_size=size, max_size=size))
    else:
        payload = draw(st.binary(max_size=12))
    if draw(st.integers(0, 30)) == 0:
        payload += b"x"  # a wrong length for fixed-size frames
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream_id)
        + payload
    )


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    head = struct.pack(">I", len(payload))[1:] + bytes([kind, flags])
    return head + struct.pack(">I", stream_id) + payload


@st.composite
def well_formed(draw: st.DrawFn, encoder: hpack.Encoder, opened: list[int]) -> bytes:
    """A frame a correct client could send: mostly new requests and their bodies."""
    choice = draw(st.integers(0, 9))
    if choice < 4 or not opened:
        stream_id = (opened[-1] + 2) if opened else 1
        opened.append(stream_id)
        block = encoder.encode(draw(good_requests))
        flags = 0x4 | draw(st.sampled_from([0, 0x1]))
        return frame(1, flags, stream_id, block)
    stream_id = draw(st.sampled_from(opened))
    if choice < 7:
        size = draw(st.sampled_from([0, 1, 3, 1000, 16_384]))
        return frame(0, draw(st.sampled_from([0, 0x1])), stream_id, b"d" * size)
    if choice == 7:
        increment = draw(st.sampled_from([1, 1000, 70_000]))
        return frame(8, 0, draw(st.sampled_from([0, stream_id])), struct.pack(">I", increment))
    if choice == 8:
        return frame(3, 0, stream_id, struct.pack(">I", 8))
    return frame(6, 0, 0, b"12345678")


good_requests = st.sampled_from(
    [
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")],
        [(":method", "POST"), (":scheme", "http"), (":path", "/u")],
        [(":method", "POST"), (":scheme", "http"), (":path", "/u"), ("content-length", "3")],
    ]
)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[bytes], list[int], int]:
    encoder = hpack.Encoder()
    opened: list[int] = []
    body = PREFACE + frame(4, 0, 0)  # an empty SETTINGS
    for _ in range(draw(st.integers(1, 25))):
        if draw(st.integers(0, 7)) == 0:
            body += draw(frames(encoder))  # anything at all
        else:
            body += draw(well_formed(encoder, opened))
    cuts = sorted(draw(st.lists(st.integers(1, len(body) - 1), max_size=8, unique=True)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    actions = draw(st.lists(st.integers(0, 9), min_size=len(pieces), max_size=len(pieces)))
    window = draw(st.sampled_from([0, 100, 65_535, 786_432]))
    return pieces, actions, window


def split(data: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    while data:
        length = int.from_bytes(data[:3], "big")
        assert len(data) >= 9 + length, "the server sent a truncated frame"
        out.append((data[3], data[4], data[9 : 9 + length]))
        data = data[9 + length :]
    return out


def act(stream: HttpStream, action: int, now: float) -> None:
    """What an app might do with a stream at this point."""
    try:
        if action < 3:
            stream.read_body(now)
        elif action < 6:
            stream.response_headers = [(b"content-type", b"text/plain")]
            stream.complete(b"z" * (5 if action < 5 else 70_000), now)
            stream.finish()
        elif action == 6:
            stream.write(b"w" * 20_000, now)
        elif action == 7:
            stream.abort()
            stream.finish()
    except ClientDisconnected:
        stream.finish()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations())
def test_any_frame_sequence_gets_frames_back_and_never_an_exception(conversation):
    pieces, actions, window = conversation
    server = Http2Protocol(
        ServerContext(wall_time=1e9),
        TRANSPORT,
        0.0,
        Http2Limits(initial_stream_window_size=window),
    )
    running: list[HttpStream] = []
    sent = b""
    now = 0.0
    for piece, action in zip(pieces, actions, strict=True):
        now += 0.01
        for event in server.receive_data(piece, now):
            if isinstance(event, RequestReceived):
                running.append(event.stream)
        for stream in list(running):
            if not stream.response_complete and not stream.aborted:
                act(stream, action, now)
            if stream.response_complete or stream.aborted:
                running.remove(stream)
        server.on_timer(now)
        out = server.data_to_send()
        sent += out
        if server.should_close:
            assert server.receive_data(b"more", now) == []
            assert server.data_to_send() == b""
            break
    frames_out = split(sent)
    assert frames_out[0][0] == 4  # our SETTINGS first
    goaways = [payload for kind, _, payload in frames_out if kind == GOAWAY]
    errors = [g for g in goaways if struct.unpack(">I", g[4:8])[0] != 0]
    if errors:
        assert server.should_close
    for stream in running:
        stream.abort()
        stream.finish()
    server.connection_lost(now)
