"""Connection errors (RFC 9113 5.4.1) end the connection with GOAWAY carrying the right error
code, as haproxy answers them; the server then serves the next connection as usual."""

from __future__ import annotations

import struct
import subprocess
import time
from collections.abc import Callable

import pytest
from h2.events import ConnectionTerminated
from h2client import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    PRIORITY,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    ErrorCodes,
    H2Client,
    frame,
    get,
    ping_frame,
    request_headers,
    settings_frame,
    window_update_frame,
)
from support import require_peer


def open_stream(client: H2Client) -> bytes:
    """Stream 1 open for a request body (the bytes of its HEADERS frame)."""
    return client.raw_headers(1, request_headers("/upload", "POST"), end_stream=False)


def hpack(client: H2Client) -> bytes:
    return client.h2.encoder.encode(request_headers("/"))


# name -> (bytes to send after the handshake, given the client; expected GOAWAY code)
CASES: dict[str, tuple[Callable[[H2Client], bytes], ErrorCodes]] = {
    "data-on-stream-0": (lambda c: frame(DATA, 0, 0, b"abc"), ErrorCodes.PROTOCOL_ERROR),
    "ping-length-7": (lambda c: frame(PING, 0, 0, b"1234567"), ErrorCodes.FRAME_SIZE_ERROR),
    "ping-on-a-stream": (lambda c: frame(PING, 0, 1, b"12345678"), ErrorCodes.PROTOCOL_ERROR),
    "window-update-0-on-connection": (
        lambda c: window_update_frame(0, 0),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "window-update-overflows-connection-window": (
        lambda c: window_update_frame(0, 2**31 - 1),
        ErrorCodes.FLOW_CONTROL_ERROR,
    ),
    "initial-window-size-2**31": (
        lambda c: settings_frame({0x4: 2**31}),
        ErrorCodes.FLOW_CONTROL_ERROR,
    ),
    "max-frame-size-too-small": (
        lambda c: settings_frame({0x5: 16_383}),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "enable-push-2": (lambda c: settings_frame({0x2: 2}), ErrorCodes.PROTOCOL_ERROR),
    "settings-length-not-multiple-of-6": (
        lambda c: frame(SETTINGS, 0, 0, b"\x00\x04\x00\x00"),
        ErrorCodes.FRAME_SIZE_ERROR,
    ),
    "settings-ack-with-payload": (
        lambda c: frame(SETTINGS, 0x1, 0, struct.pack(">HI", 4, 1)),
        ErrorCodes.FRAME_SIZE_ERROR,
    ),
    "settings-on-a-stream": (
        lambda c: frame(SETTINGS, 0, 1, b""),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "invalid-hpack": (
        # an indexed field far past the end of the static and dynamic tables
        lambda c: frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xff\xff\xff\xff\x0f"),
        ErrorCodes.COMPRESSION_ERROR,
    ),
    "frame-larger-than-max-frame-size": (
        lambda c: open_stream(c) + frame(DATA, 0, 1, b"x" * 16_385),
        ErrorCodes.FRAME_SIZE_ERROR,
    ),
    "headers-on-even-stream": (
        lambda c: frame(HEADERS, END_HEADERS | END_STREAM, 2, hpack(c)),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "data-on-idle-stream": (lambda c: frame(DATA, 0, 7, b"abc"), ErrorCodes.PROTOCOL_ERROR),
    "rst-stream-on-idle-stream": (
        lambda c: frame(RST_STREAM, 0, 9, struct.pack(">I", 8)),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "continuation-without-headers": (
        lambda c: frame(CONTINUATION, END_HEADERS, 1, hpack(c)),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "other-frame-inside-header-block": (
        lambda c: frame(HEADERS, END_STREAM, 1, hpack(c)) + ping_frame(),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "priority-wrong-length": (
        lambda c: frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00"),
        ErrorCodes.FRAME_SIZE_ERROR,
    ),
    "goaway-on-a-stream": (
        lambda c: frame(GOAWAY, 0, 1, struct.pack(">II", 0, 0)),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "max-frame-size-too-large": (
        lambda c: settings_frame({0x5: 2**24}),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "stream-id-going-backwards": (
        lambda c: (
            frame(HEADERS, END_HEADERS | END_STREAM, 5, hpack(c))
            + frame(HEADERS, END_HEADERS | END_STREAM, 3, hpack(c))
        ),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "push-promise-from-client": (
        lambda c: open_stream(c) + frame(PUSH_PROMISE, END_HEADERS, 1, b"\x00\x00\x00\x02"),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "padding-longer-than-frame": (
        lambda c: open_stream(c) + frame(DATA, 0x8, 1, b"\x09abc"),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "window-update-wrong-length": (
        lambda c: frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"),
        ErrorCodes.FRAME_SIZE_ERROR,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_connection_error_gets_goaway_with_the_right_code(
    name: str, connect: Callable[..., H2Client], h2server
) -> None:
    build, code = CASES[name]
    bystander = connect()  # another client, connected before the attack
    client = connect()
    client.send(build(client))
    started = time.monotonic()
    events = client.read_until(lambda c: c.closed, 3)

    goaway = client.goaway
    assert goaway is not None, "no GOAWAY"
    assert ErrorCodes(goaway.error_code) == code
    if client.h2_error is None:  # h2 parsed the server's side too: it saw the same GOAWAY
        [terminated] = [e for e in events if isinstance(e, ConnectionTerminated)]
        assert terminated.error_code == code
        assert terminated.last_stream_id == goaway.last_stream_id
    assert goaway.last_stream_id <= 5  # no stream above those the client opened
    assert client.closed, "the server must close the connection after a connection error"
    assert time.monotonic() - started < 2
    assert not [f for f in client.frames if f.kind == RST_STREAM]

    # The server is fine: the other client and a new one are both served.
    stream_id = bystander.request("/")
    assert bystander.response(stream_id, 3).status == 200
    assert get(h2server.port).status == 200


def test_goaway_names_the_last_stream_processed(connect: Callable[..., H2Client]) -> None:
    """Streams 1 and 3 run; then a connection error: GOAWAY's last stream id is 3 and the
    two responses were not lost (the server ends them before it closes, or resets them)."""
    client = connect()
    one = client.request("/")
    three = client.request("/")
    client.read_until(lambda c: c.streams[one].done and c.streams[three].done, 3)
    client.send(frame(DATA, 0, 0, b"abc"))
    client.read_until(lambda c: c.closed, 3)
    assert client.goaway is not None
    assert client.goaway.last_stream_id == three
    assert ErrorCodes(client.goaway.error_code) == ErrorCodes.PROTOCOL_ERROR
    assert client.streams[one].status == 200
    assert client.streams[three].status == 200


def test_graceful_goaway_is_sent_first(connect: Callable[..., H2Client], state, h2server) -> None:
    """Stopping sends GOAWAY(NO_ERROR) naming the last stream the server took."""
    client = connect()
    stream_id = client.request("/block")
    deadline = time.monotonic() + 2
    while not state.calls["/block"] and time.monotonic() < deadline:
        time.sleep(0.01)
    stopper = h2server.stop_in_background()
    try:
        client.read_until(lambda c: c.goaway is not None, 2)
        assert client.goaway is not None
        assert ErrorCodes(client.goaway.error_code) == ErrorCodes.NO_ERROR
        assert client.goaway.last_stream_id == stream_id
    finally:
        state.release.set()
        stopper.join(5)


@pytest.mark.peer("curl")
def test_streams_in_flight_finish_after_a_graceful_goaway(state, h2server) -> None:
    """The h2 library as a client stops reading at a GOAWAY, so a real peer checks that the
    stream in flight finishes after the server's graceful GOAWAY (RFC 9113 6.8)."""
    curl = require_peer("curl")
    process = subprocess.Popen(
        [curl, "-sS", "--http2-prior-knowledge", f"http://127.0.0.1:{h2server.port}/block"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 5
        while not state.calls["/block"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert state.calls["/block"]
        stopper = h2server.stop_in_background()
        time.sleep(0.3)  # the GOAWAY is out; the stream is still in flight
        state.release.set()
        out, err = process.communicate(timeout=10)
        stopper.join(5)
    finally:
        state.release.set()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert out == b"released"
