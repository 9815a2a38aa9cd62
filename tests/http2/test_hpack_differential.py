"""The engine's HPACK decoder against the ``hpack`` package's, on generated header blocks.

Each example is a sequence of header blocks for one connection (the dynamic table carries
from block to block), built from every representation RFC 7541 has: indexed fields inside and
past the tables, literals with and without indexing and never indexed, literal and indexed
names, Huffman-coded and raw strings, table size updates at the start of a block and out of
place, integers with continuation bytes, truncated blocks and random bytes. Both decoders must
give the same fields for every block, or both refuse the same block (after which the connection
is gone, so the sequence stops there).
"""

from __future__ import annotations

import hpack
import pytest
from hpack.exceptions import HPACKDecodingError, OversizedHeaderListError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiercel.core.http2_frames import (
    HeaderDecoder,
    HeaderListTooLarge,
    HpackError,
    encode_integer,
)

_huffman = hpack.huffman.HuffmanEncoder(
    hpack.huffman_constants.REQUEST_CODES, hpack.huffman_constants.REQUEST_CODES_LENGTH
)
names = st.sampled_from([b"x-a", b"cookie", b":path", b"content-type", b"", b"Upper", b"x" * 200])
values = st.one_of(
    st.sampled_from([b"", b"1", b"/index.html", b"text/plain", b"v" * 300]),
    st.binary(max_size=20),
)


@st.composite
def string(draw: st.DrawFn, data: bytes) -> bytes:
    if draw(st.booleans()):
        coded = _huffman.encode(data)
        if draw(st.integers(0, 20)) == 0 and coded:
            coded = coded[:-1] + bytes([coded[-1] ^ 0x01])  # maybe bad padding
        return encode_integer(len(coded), 7, 0x80) + coded
    return encode_integer(len(data), 7, 0x00) + data


@st.composite
def representation(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 15))
    if kind <= 5:  # indexed: mostly the static table, sometimes the dynamic one or past it
        static, dynamic = st.integers(1, 61), st.integers(62, 64)
        index = draw(st.one_of(static, static, static, static, dynamic, st.integers(0, 200)))
        return encode_integer(index, 7, 0x80)
    if kind <= 13:  # literal: with indexing, without, never
        pattern, prefix = draw(st.sampled_from([(0x40, 6), (0x00, 4), (0x10, 4)]))
        literal, static = st.just(0), st.integers(1, 61)
        name_index = draw(st.one_of(literal, literal, static, static, st.integers(62, 64)))
        head = encode_integer(name_index, prefix, pattern)
        if name_index == 0:
            head += draw(string(draw(names)))
        return head + draw(string(draw(values)))
    if kind == 14:  # table size update
        return encode_integer(draw(st.sampled_from([0, 50, 100, 4096, 4097])), 5, 0x20)
    return draw(st.binary(min_size=1, max_size=4))


@st.composite
def blocks(draw: st.DrawFn) -> bytes:
    block = b"".join(draw(st.lists(representation(), max_size=8)))
    if block and draw(st.integers(0, 10)) == 0:
        block = block[: draw(st.integers(0, len(block) - 1))]
    return block


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(blocks(), min_size=1, max_size=8),
    st.sampled_from([4096, 100, 0]),
    st.sampled_from([65_536, 400]),
    st.integers(0, 9),
)
def test_same_fields_or_the_same_refusal(sequence, table_size, list_size, shrink_first):
    if shrink_first:  # a client that honours a limit under 4096 shrinks the table at once
        sequence[0] = encode_integer(table_size, 5, 0x20) + sequence[0]
    ours = HeaderDecoder(list_size, table_size)
    reference = hpack.Decoder(max_header_list_size=list_size)
    reference.max_allowed_table_size = table_size
    for block in sequence:
        try:
            expected = [(bytes(n), bytes(v)) for n, v in reference.decode(block, raw=True)]
        except OversizedHeaderListError:
            with pytest.raises(HeaderListTooLarge):
                ours.decode(block)
            return
        except HPACKDecodingError:
            with pytest.raises(HpackError):
                ours.decode(block)
            return
        assert ours.decode(block) == expected


def test_a_shrunk_limit_must_be_followed_by_a_size_update():
    decoder = HeaderDecoder(65_536)
    decoder.decode(b"\x40\x01a\x01b")  # a: b, into the table
    decoder.max_allowed_table_size = 0  # our SETTINGS lowered it
    with pytest.raises(HpackError, match="shrunk"):
        decoder.decode(b"\xbe")
    decoder = HeaderDecoder(65_536)
    decoder.max_allowed_table_size = 0
    assert decoder.decode(b"\x20\x82") == [(b":method", b"GET")]


def test_an_entry_larger_than_the_table_empties_it():
    """RFC 7541 4.4: not an error; the table is simply empty afterwards."""
    decoder = HeaderDecoder(65_536)
    assert decoder.decode(b"\x3f\x45" + b"\x40\x01a\x01b") == [(b"a", b"b")]  # table: 100 bytes
    big = b"\x40\x01c" + encode_integer(80, 7, 0) + b"v" * 80  # 113 bytes with the overhead
    assert decoder.decode(big) == [(b"c", b"v" * 80)]
    with pytest.raises(HpackError, match="no table entry 62"):
        decoder.decode(b"\xbe")
