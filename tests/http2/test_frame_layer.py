"""The engine's own HTTP/2 frame layer and HPACK encoder, on bytes (RFC 9113, RFC 7541).

Each test drives one ``Http2Protocol`` in memory. The client is h2 where a well-behaved client
is enough (it also checks what the server sends: h2 rejects bad frames, bad HPACK and flow
control violations), and hand-built frames where the test needs a misbehaving one. The app is
a synchronous stand-in that answers every request with its method, path and headers.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import hpack
import pytest
from h2client import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    RST_STREAM,
    SETTINGS,
    ErrorCodes,
    RawFrame,
    SettingCodes,
    frame,
    ping_frame,
    settings_frame,
    split_frames,
    window_update_frame,
)
from tiercel.core import ServerContext, TransportInfo
from tiercel.core.events import RequestReceived
from tiercel.core.http2 import PREFACE, Http2Limits, Http2Protocol
from tiercel.core.http2_frames import HeaderEncoder
from tiercel.core.stream import HttpStream

PADDED, PRIORITY_FLAG = 0x8, 0x20
TRANSPORT = TransportInfo(("127.0.0.1", 8000), ("127.0.0.1", 50000))


@dataclass
class Peer:
    """One server connection, an h2 client on it, and a synchronous app."""

    server: Http2Protocol
    client: h2.connection.H2Connection
    now: float = 0.0
    frames: list[RawFrame] = field(default_factory=list)  # everything the server sent
    events: list[h2.events.Event] = field(default_factory=list)  # what h2 made of it
    streams: dict[int, HttpStream] = field(default_factory=dict)  # requests the app got
    response_body: bytes | None = b""  # None: the app does not answer (yet)
    auto_credit: bool = True  # the client gives back the window its DATA used

    def feed(self, data: bytes) -> list[RawFrame]:
        """Raw bytes to the server; the server's answer is split into frames (not given
        to h2, which the raw bytes may have confused)."""
        self.take(self.server.receive_data(data, self.now))
        out = split_frames(self.server.data_to_send())
        self.frames += out
        return out

    def pump(self) -> list[h2.events.Event]:
        """What the h2 client has queued to the server, and back, until both are quiet."""
        new: list[h2.events.Event] = []
        for _ in range(20):
            data = self.client.data_to_send()
            if data:
                self.take(self.server.receive_data(data, self.now))
            out = self.server.data_to_send()
            if not out and not data:
                break
            self.frames += split_frames(out)
            events = self.client.receive_data(out)
            for event in events:
                if isinstance(event, h2.events.DataReceived) and self.auto_credit:
                    self.client.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            new += events
        self.events += new
        return new

    def take(self, events: list) -> None:
        for event in events:
            if isinstance(event, RequestReceived):
                self.streams[event.stream.stream_id] = event.stream
                if self.response_body is not None:
                    answer(event.stream, self.response_body)

    def responses(self) -> dict[int, tuple[dict[bytes, bytes], bytes]]:
        """stream id -> (response headers, body) for every response h2 saw."""
        out: dict[int, tuple[dict[bytes, bytes], bytes]] = {}
        for event in self.events:
            if isinstance(event, h2.events.ResponseReceived):
                out[event.stream_id] = (dict(event.headers), b"")
            elif isinstance(event, h2.events.DataReceived):
                headers, body = out[event.stream_id]
                out[event.stream_id] = (headers, body + event.data)
        return out

    def resets(self) -> dict[int, int]:
        return {f.stream_id: f.error_code for f in self.frames if f.kind == RST_STREAM}

    @property
    def goaway(self) -> RawFrame | None:
        found = [f for f in self.frames if f.kind == GOAWAY]
        return found[-1] if found else None


def answer(stream: HttpStream, extra: bytes = b"") -> None:
    """The app: 200 with the request's method, path and headers as the body."""
    body = f"{stream.method} {stream.path}\n".encode()
    body += b"".join(n + b": " + v + b"\n" for n, v in stream.headers) + extra
    stream.response_headers = [(b"content-type", b"text/plain")]
    stream.complete(body)
    stream.finish()


def connect(
    limits: Http2Limits | None = None, client_settings: dict[int, int] | None = None
) -> Peer:
    server = Http2Protocol(ServerContext(wall_time=1e9), TRANSPORT, 0.0, limits)
    config = h2.config.H2Configuration(client_side=True, header_encoding=None)
    client = h2.connection.H2Connection(config)
    client.initiate_connection()
    if client_settings:
        client.update_settings(client_settings)
    peer = Peer(server, client)
    peer.pump()
    return peer


def get(peer: Peer, path: str = "/", extra: list[tuple[bytes, bytes]] | None = None) -> int:
    stream_id = peer.client.get_next_available_stream_id()
    headers = [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"example.test"),
        (b":path", path.encode()),
    ]
    peer.client.send_headers(stream_id, headers + (extra or []), end_stream=True)
    peer.pump()
    return stream_id


# -- HPACK encoding -----------------------------------------------------------------------------


def test_encoder_round_trips_through_a_strict_decoder_while_the_table_changes_size():
    """Random response header lists, with the peer's table size going down, up and to zero
    between them: hpack's decoder (which enforces the announced size) reads back every list."""
    rng = random.Random(7)
    encoder, decoder = HeaderEncoder(), hpack.Decoder()
    values = [b"", b"x", b"text/plain", b"a" * 300, b"b" * 3000, "é".encode()]
    names = [b"content-type", b"x-one", b"set-cookie", b"date", b"authorization", b"x-two"]
    for round_number in range(2000):
        if round_number % 97 == 0:
            size = rng.choice([0, 64, 256, 4096, 65536])
            encoder.set_max_table_size(size)
            decoder.max_allowed_table_size = min(size, 4096)
            if rng.random() < 0.5:  # down and up again before the next block
                encoder.set_max_table_size(4096)
                decoder.max_allowed_table_size = 4096
        headers = [(b":status", rng.choice([b"200", b"404", b"299"]))]
        headers += [
            (rng.choice(names), rng.choice(values) + str(rng.randrange(5)).encode())
            for _ in range(rng.randrange(6))
        ]
        decoded = decoder.decode(encoder.encode(headers), raw=True)
        assert [(bytes(n), bytes(v)) for n, v in decoded] == headers


def test_repeated_response_fields_are_indexed():
    encoder = HeaderEncoder()
    headers = [(b":status", b"200"), (b"content-type", b"text/plain"), (b"server", b"tiercel")]
    first = encoder.encode(headers)
    again = encoder.encode(headers)
    assert len(again) == 3 < len(first)
    assert hpack.Decoder().decode(first + b"", raw=True)  # well-formed on its own


def test_a_repeated_header_list_is_re_encoded_once_the_table_moves():
    """A block that only referenced the table is reused while the table stands still; after
    another field is inserted (every index moves by one) the same list must encode anew."""
    encoder, decoder = HeaderEncoder(), hpack.Decoder()
    common = [(b":status", b"200"), (b"x-a", b"1"), (b"x-b", b"2")]
    blocks = [encoder.encode(common) for _ in range(3)]
    assert blocks[1] == blocks[2] == b"\x88\xbf\xbe"  # 62: x-b (newest), 63: x-a
    blocks.append(encoder.encode([(b"x-c", b"3")]))
    blocks.append(encoder.encode(common))
    assert blocks[-1] == b"\x88\xc0\xbf"
    encoder.set_max_table_size(0)  # and when the peer empties the table
    blocks.append(encoder.encode(common))
    decoded = [[(bytes(n), bytes(v)) for n, v in decoder.decode(b, raw=True)] for b in blocks]
    assert decoded == [common, common, common, [(b"x-c", b"3")], common, common]


def test_sensitive_fields_are_never_indexed():
    encoder, decoder = HeaderEncoder(), hpack.Decoder()
    block = encoder.encode([(b"set-cookie", b"session=secret")])
    assert block[0] & 0xF0 == 0x10  # literal, never indexed (RFC 7541 6.2.3)
    assert decoder.decode(block, raw=True) == [(b"set-cookie", b"session=secret")]
    assert len(decoder.header_table.dynamic_entries) == 0


def test_a_table_size_of_zero_from_the_client_is_honoured():
    """SETTINGS_HEADER_TABLE_SIZE=0: the next response starts with a table size update and
    h2, which enforces the size it asked for, decodes every response."""
    peer = connect(client_settings={SettingCodes.HEADER_TABLE_SIZE: 0})
    ids = [get(peer, f"/{n}") for n in range(3)]
    responses = peer.responses()
    assert [responses[i][1].splitlines()[0] for i in ids] == [b"GET /0", b"GET /1", b"GET /2"]
    first_block = next(f for f in peer.frames if f.kind == HEADERS).payload
    assert first_block[0] == 0x20  # dynamic table size update to 0


def test_response_headers_larger_than_a_frame_go_out_in_continuation_frames():
    peer = connect()
    peer.response_body = None
    stream_id = get(peer)
    stream = peer.streams[stream_id]
    stream.response_headers = [(b"x-big", b"v" * 40_000)]
    stream.complete(b"done")
    stream.finish()
    peer.pump()
    kinds = [f.kind for f in peer.frames if f.stream_id == stream_id]
    assert kinds == [HEADERS, CONTINUATION, CONTINUATION, DATA]
    assert all(len(f.payload) <= 16_384 for f in peer.frames)
    headers, body = peer.responses()[stream_id]
    assert headers[b"x-big"] == b"v" * 40_000
    assert body == b"done"


# -- request header blocks ------------------------------------------------------------------------


def block_frame(stream_id: int, block: bytes, flags: int = END_HEADERS | END_STREAM) -> bytes:
    return frame(HEADERS, flags, stream_id, block)


def test_a_repeated_block_follows_the_clients_header_table():
    """The same one-byte-indexed block (index 62: the newest dynamic entry) means a different
    header once the client has inserted another field: the server must decode it afresh."""
    peer = connect()
    static = b"\x82\x86\x84"  # :method GET, :scheme http, :path /
    repeated = static + b"\xbe"  # dynamic index 62
    peer.feed(block_frame(1, static + b"\x40\x03x-a\x011"))  # x-a: 1, added to the table
    peer.feed(block_frame(3, repeated))
    peer.feed(block_frame(5, repeated))
    peer.feed(block_frame(7, static + b"\x40\x03x-b\x012"))  # x-b: 2 is now index 62
    peer.feed(block_frame(9, repeated))
    seen = {i: [h for h in s.headers if h[0].startswith(b"x-")] for i, s in peer.streams.items()}
    assert seen == {
        1: [(b"x-a", b"1")],
        3: [(b"x-a", b"1")],
        5: [(b"x-a", b"1")],
        7: [(b"x-b", b"2")],
        9: [(b"x-b", b"2")],
    }
    assert peer.goaway is None


def test_each_request_gets_its_own_header_list():
    """Two requests from the same cached block: an app that edits its headers does not
    change the next request's."""
    peer = connect()
    peer.response_body = None
    get(peer)  # h2 adds :authority to its table: the later blocks are one-byte indexes
    first = peer.streams[get(peer)]
    first.headers.append((b"x-added", b"by the app"))
    second = peer.streams[get(peer)]
    assert second.headers is not first.headers
    assert (b"x-added", b"by the app") not in second.headers
    assert second.headers == first.headers[:-1]


def test_padded_and_prioritised_frames_are_understood():
    peer = connect()
    peer.response_body = None
    encoder = hpack.Encoder()
    block = encoder.encode(
        [(":method", "POST"), (":scheme", "http"), (":path", "/up"), ("content-length", "3")]
    )
    priority = struct.pack(">IB", 0, 15)
    headers_payload = b"\x04" + priority + block + b"\x00" * 4
    peer.feed(frame(HEADERS, END_HEADERS | PADDED | PRIORITY_FLAG, 1, headers_payload))
    peer.feed(frame(DATA, END_STREAM | PADDED, 1, b"\x0aabc" + b"\x00" * 10))
    stream = peer.streams[1]
    assert stream.body_complete
    assert stream.read_body() == b"abc"
    answer(stream)
    out = split_frames(peer.server.data_to_send())
    assert [(f.kind, f.stream_id) for f in out] == [(HEADERS, 1), (DATA, 1)]
    assert not peer.resets() and peer.goaway is None


# -- stream states and errors -----------------------------------------------------------------


def test_the_first_frame_after_the_preface_must_be_settings():
    server = Http2Protocol(ServerContext(), TRANSPORT, 0.0)
    server.receive_data(PREFACE + ping_frame(), 0.0)
    frames = split_frames(server.data_to_send())
    assert frames[-1].kind == GOAWAY
    assert frames[-1].error_code == ErrorCodes.PROTOCOL_ERROR
    assert server.should_close


def test_a_wrong_preface_gets_goaway():
    server = Http2Protocol(ServerContext(), TRANSPORT, 0.0)
    server.receive_data(b"GET / HTTP/1.1\r\n\r\n", 0.0)
    frames = split_frames(server.data_to_send())
    assert frames[-1].kind == GOAWAY
    assert frames[-1].error_code == ErrorCodes.PROTOCOL_ERROR
    assert server.should_close


def test_a_preface_split_byte_by_byte_is_fine():
    server = Http2Protocol(ServerContext(), TRANSPORT, 0.0)
    for byte in PREFACE + settings_frame():
        server.receive_data(bytes([byte]), 0.0)
    frames = split_frames(server.data_to_send())
    assert [f.kind for f in frames] == [SETTINGS, 8, SETTINGS]  # ours, window, the ACK
    assert not server.should_close


def test_data_after_the_request_ended_gets_stream_closed():
    """Half-closed (remote), RFC 9113 5.1: RST_STREAM(STREAM_CLOSED); the connection stays."""
    peer = connect()
    peer.response_body = None
    stream_id = get(peer)
    peer.feed(frame(DATA, 0, stream_id, b"late"))
    assert peer.resets() == {stream_id: ErrorCodes.STREAM_CLOSED}
    assert peer.streams[stream_id].aborted
    assert peer.goaway is None
    peer.feed(frame(DATA, 0, stream_id, b"later"))  # after our reset: ignored
    assert len([f for f in peer.frames if f.kind == RST_STREAM]) == 1


def test_data_on_a_finished_stream_that_we_did_not_reset_gets_stream_closed():
    peer = connect()
    stream_id = get(peer)
    assert peer.responses()[stream_id][1].startswith(b"GET /")
    peer.feed(frame(DATA, 0, stream_id, b"x"))
    assert peer.resets() == {stream_id: ErrorCodes.STREAM_CLOSED}
    assert peer.goaway is None


def test_a_stream_window_pushed_past_2_31_resets_that_stream_only():
    peer = connect()
    peer.response_body = None
    stream_id = get(peer)
    peer.feed(window_update_frame(stream_id, 2**31 - 1))
    assert peer.resets() == {stream_id: ErrorCodes.FLOW_CONTROL_ERROR}
    assert peer.goaway is None


def test_a_zero_window_update_on_a_stream_resets_it():
    peer = connect()
    peer.response_body = None
    stream_id = get(peer)
    peer.feed(window_update_frame(stream_id, 0))
    assert peer.resets() == {stream_id: ErrorCodes.PROTOCOL_ERROR}
    assert peer.goaway is None


def test_content_length_on_a_request_without_a_body_is_malformed():
    peer = connect()
    stream_id = get(peer, "/", [(b"content-length", b"5")])
    assert peer.resets() == {stream_id: ErrorCodes.PROTOCOL_ERROR}
    assert stream_id not in peer.streams  # no app ran


def test_request_trailers_end_the_body():
    peer = connect()
    peer.response_body = None
    client = peer.client
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"example.test"),
        (b":path", b"/t"),
    ]
    client.send_headers(1, headers)
    client.send_data(1, b"abc")
    client.send_headers(1, [(b"x-checksum", b"1")], end_stream=True)
    peer.pump()
    stream = peer.streams[1]
    assert stream.body_complete
    assert stream.read_body() == b"abc"
    assert not peer.resets()


def test_trailers_without_end_stream_are_malformed():
    peer = connect()
    peer.response_body = None
    encoder = hpack.Encoder()
    block = encoder.encode([(":method", "POST"), (":scheme", "http"), (":path", "/")])
    peer.feed(block_frame(1, block, END_HEADERS))
    peer.feed(block_frame(1, encoder.encode([("x-t", "1")]), END_HEADERS))
    assert peer.resets() == {1: ErrorCodes.PROTOCOL_ERROR}
    assert peer.streams[1].aborted
    assert peer.goaway is None


def test_a_stream_that_sends_past_its_window_ends_the_connection():
    peer = connect(Http2Limits(initial_stream_window_size=65_535))
    peer.response_body = None
    encoder = peer.client.encoder
    block = encoder.encode([(":method", "POST"), (":scheme", "http"), (":path", "/up")])
    peer.feed(block_frame(1, block, END_HEADERS))
    for _ in range(3):
        peer.feed(frame(DATA, 0, 1, b"x" * 16_384))
    assert peer.goaway is None
    peer.feed(frame(DATA, 0, 1, b"x" * 16_384))  # 65,536 unread bytes: one over the window
    assert peer.goaway is not None
    assert peer.goaway.error_code == ErrorCodes.FLOW_CONTROL_ERROR


# -- flow control ---------------------------------------------------------------------------------


def test_a_small_client_window_is_respected_and_opened_by_settings_and_updates():
    """INITIAL_WINDOW_SIZE=10: ten bytes go out; a WINDOW_UPDATE lets 20 more go; raising
    INITIAL_WINDOW_SIZE opens the open stream's window by the difference (RFC 9113 6.9.2)."""
    peer = connect(client_settings={SettingCodes.INITIAL_WINDOW_SIZE: 10})
    peer.response_body = None
    peer.auto_credit = False
    stream_id = get(peer)
    stream = peer.streams[stream_id]
    stream.complete(b"y" * 100)
    stream.finish()
    peer.pump()

    def body_frames() -> list[int]:
        return [len(f.payload) for f in peer.frames if f.kind == DATA]

    assert body_frames() == [10]
    peer.feed(window_update_frame(stream_id, 20))
    assert body_frames() == [10, 20]
    peer.feed(settings_frame({SettingCodes.INITIAL_WINDOW_SIZE: 80}))
    assert body_frames() == [10, 20, 70]
    assert peer.frames[-1].flags & END_STREAM or peer.frames[-2].flags & END_STREAM


def test_a_client_lowering_the_window_below_what_was_sent_waits_for_updates():
    peer = connect()
    peer.response_body = None
    stream_id = get(peer)
    peer.feed(settings_frame({SettingCodes.INITIAL_WINDOW_SIZE: 0}))
    stream = peer.streams[stream_id]
    stream.complete(b"z" * 50)
    peer.pump()
    assert [f for f in peer.frames if f.kind == DATA] == []
    peer.feed(window_update_frame(stream_id, 50))
    assert sum(len(f.payload) for f in peer.frames if f.kind == DATA) == 50


def test_the_connection_window_is_credited_as_request_bodies_arrive():
    """Unread bodies on many streams never block the connection: more than the connection
    window in total goes through while no app reads."""
    peer = connect(Http2Limits(initial_connection_window_size=65_535))
    peer.response_body = None
    encoder = peer.client.encoder
    for stream_id in range(1, 13, 2):
        block = encoder.encode([(":method", "POST"), (":scheme", "http"), (":path", "/u")])
        peer.feed(block_frame(stream_id, block, END_HEADERS))
        peer.feed(frame(DATA, END_STREAM, stream_id, b"d" * 16_000))
    assert peer.goaway is None
    assert [s.body_buffered for s in peer.streams.values()] == [16_000] * 6
    credited = sum(
        struct.unpack(">I", f.payload)[0] for f in peer.frames if f.kind == 8 and f.stream_id == 0
    )
    assert credited >= 6 * 16_000 - 65_535


# -- h2c upgrade -------------------------------------------------------------------------------


def test_an_upgrade_with_a_bad_settings_payload_gets_goaway():
    server = Http2Protocol(ServerContext(), TRANSPORT, 0.0, upgrade_settings=b"AAAA")
    frames = split_frames(server.data_to_send())
    assert frames[0].kind == GOAWAY
    assert frames[0].error_code == ErrorCodes.PROTOCOL_ERROR
    assert server.should_close


def test_unknown_frame_types_are_ignored():
    peer = connect()
    peer.feed(frame(0xFA, 0, 0, b"whatever") + ping_frame(b"87654321"))
    assert peer.frames[-1].kind == PING and peer.frames[-1].payload == b"87654321"
    assert peer.goaway is None


@pytest.mark.parametrize("kind", [HEADERS, CONTINUATION])
def test_a_header_block_cannot_be_interrupted(kind: int):
    peer = connect()
    encoder = peer.client.encoder
    block = encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/")])
    start = frame(HEADERS, END_STREAM, 1, block[:2])
    other = frame(kind, END_HEADERS, 3, block[2:])  # on another stream
    peer.feed(start + other)
    assert peer.goaway is not None
    assert peer.goaway.error_code == ErrorCodes.PROTOCOL_ERROR


def test_header_blocks_on_a_stream_we_reset_are_decoded_and_ignored():
    """Trailers still in flight on a stream the server reset are ignored (RFC 9113 5.1), but
    their HPACK block is decoded all the same: a field they add to the table is there for the
    next request."""
    peer = connect()
    encoder = hpack.Encoder()
    bad = encoder.encode([(":method", "POST"), (":scheme", "http"), (":path", "no-slash")])
    peer.feed(block_frame(1, bad, END_HEADERS))
    assert peer.resets() == {1: ErrorCodes.PROTOCOL_ERROR}
    peer.feed(block_frame(1, b"\x40\x03x-t\x017"))  # trailers: x-t: 7, added to the table
    good = b"\x82\x86\x84\xbe"  # GET, http, /, and dynamic index 62: x-t: 7
    peer.feed(block_frame(3, good))
    assert peer.resets() == {1: ErrorCodes.PROTOCOL_ERROR}
    assert peer.goaway is None
    assert (b"x-t", b"7") in peer.streams[3].headers


def test_frames_split_across_many_reads_arrive_whole():
    peer = connect()
    peer.response_body = None
    encoder = peer.client.encoder
    block = encoder.encode([(":method", "POST"), (":scheme", "http"), (":path", "/up")])
    body = bytes(range(256)) * 64  # 16 KiB
    wire = block_frame(1, block, END_HEADERS) + frame(DATA, END_STREAM, 1, body)
    for start in range(0, len(wire), 1000):
        peer.feed(wire[start : start + 1000])
    stream = peer.streams[1]
    assert stream.body_complete
    assert stream.read_body() == body
    assert peer.goaway is None and not peer.resets()


@pytest.mark.parametrize("wrap", [bytearray, memoryview], ids=["bytearray", "memoryview"])
def test_transports_may_hand_over_bytearrays_and_memoryviews(wrap):
    peer = connect()
    peer.response_body = None
    block = peer.client.encoder.encode([(":method", "POST"), (":scheme", "http"), (":path", "/")])
    wire = block_frame(1, block, END_HEADERS) + frame(DATA, END_STREAM, 1, b"abc")
    peer.take(peer.server.receive_data(wrap(wire), 0.0))
    body = peer.streams[1].read_body()
    assert body == b"abc"
    assert type(body) is bytes
