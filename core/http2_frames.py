"""HTTP/2 wire pieces for the server engine: frame codes, frame headers, and an HPACK encoder.

The connection logic (stream states, flow control, what each frame means) lives in http2.py;
this module only knows how bytes look. HPACK (RFC 7541) is ours in both directions, on the
``hpack`` package's static table and Huffman code: ``hpack.Encoder`` and ``hpack.Decoder`` spend
most of a small request's CPU time on per-field objects and logging. The decoder is held to
``hpack.Decoder`` by a differential test (tests/http2/test_hpack_differential.py): same fields
or the same refusal for every block.

Encoder policy. A field that is in the static table as it stands is one byte. Any other field
is inserted into the dynamic table the first time it is sent (unless it is sensitive or too big)
and is one or two bytes afterwards, while it is still in the table. The literal encoding of each
field (name reference, Huffman-coded value) is computed once and kept in a bounded cache, so a
field costs a dict lookup whether it is indexed or not. A whole block that inserted nothing is
kept too: the same header list encodes to the same bytes until the table next changes.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from typing import Final

from hpack.exceptions import HPACKDecodingError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

from .caches import BoundedCache

Headers = list[tuple[bytes, bytes]]

# Frame types (RFC 9113 6).
DATA: Final = 0x0
HEADERS: Final = 0x1
PRIORITY: Final = 0x2
RST_STREAM: Final = 0x3
SETTINGS: Final = 0x4
PUSH_PROMISE: Final = 0x5
PING: Final = 0x6
GOAWAY: Final = 0x7
WINDOW_UPDATE: Final = 0x8
CONTINUATION: Final = 0x9

# Flags.
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

# SETTINGS identifiers (RFC 9113 6.5.2, RFC 8441).
SETTINGS_HEADER_TABLE_SIZE: Final = 0x1
SETTINGS_ENABLE_PUSH: Final = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS: Final = 0x3
SETTINGS_INITIAL_WINDOW_SIZE: Final = 0x4
SETTINGS_MAX_FRAME_SIZE: Final = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE: Final = 0x6
SETTINGS_ENABLE_CONNECT_PROTOCOL: Final = 0x8

MAX_WINDOW: Final = 2**31 - 1
DEFAULT_WINDOW: Final = 65_535
DEFAULT_MAX_FRAME_SIZE: Final = 16_384


class ErrorCode(enum.IntEnum):
    """RFC 9113 7."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


# length (24 bits as 8 + 16), type, flags, stream id
FRAME_HEADER: Final = struct.Struct(">BHBBL")
_U32: Final = struct.Struct(">L")
_U32_PAIR: Final = struct.Struct(">LL")
_SETTING: Final = struct.Struct(">HL")


def frame_header(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    return FRAME_HEADER.pack(length >> 16, length & 0xFFFF, kind, flags, stream_id)


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    return FRAME_HEADER.pack(length >> 16, length & 0xFFFF, kind, flags, stream_id) + payload


def settings_frame(settings: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in settings.items()))


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """The (identifier, value) pairs of a SETTINGS payload whose length is a multiple of 6."""
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def rst_stream_frame(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _U32.pack(code))


def goaway_frame(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _U32_PAIR.pack(last_stream_id, code) + debug)


def unpack_u32(payload: bytes) -> int:
    value: int = _U32.unpack_from(payload)[0]
    return value


def unpack_goaway(payload: bytes) -> tuple[int, int]:
    last, code = _U32_PAIR.unpack_from(payload)
    return last & MAX_WINDOW, code


# -- HPACK encoding (RFC 7541) -------------------------------------------------------------------

_STATIC: Final = HeaderTable.STATIC_TABLE
_STATIC_EXACT: Final[dict[tuple[bytes, bytes], bytes]] = {}
_STATIC_NAME: Final[dict[bytes, int]] = {}
for _index, (_name, _value) in enumerate(_STATIC, start=1):
    _STATIC_EXACT.setdefault((_name, _value), bytes((0x80 | _index,)))
    _STATIC_NAME.setdefault(_name, _index)
_STATIC_SIZE: Final = len(_STATIC)
_HUFFMAN: Final = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)

# Never stored in the table, and marked so that intermediaries do not store them either.
_SENSITIVE: Final = frozenset({b"authorization", b"proxy-authorization", b"set-cookie"})
_LITERAL_CACHE_LIMIT: Final = 2048
_BLOCK_CACHE_LIMIT: Final = 256
_BLOCK_CACHE_FIELDS: Final = 16


def encode_integer(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 5.1: ``value`` with an N-bit prefix; ``first`` holds the pattern bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    """A string literal, Huffman-coded when that is shorter."""
    coded = _HUFFMAN.encode(data)
    if len(coded) < len(data):
        return encode_integer(len(coded), 7, 0x80) + coded
    return encode_integer(len(data), 7, 0x00) + data


def _literal(name: bytes, value: bytes, pattern: int, prefix_bits: int) -> bytes:
    """A literal field: ``pattern`` 0x40 (indexed), 0x00 (not indexed), 0x10 (never)."""
    name_index = _STATIC_NAME.get(name)
    if name_index is not None:
        head = encode_integer(name_index, prefix_bits, pattern)
    else:
        head = bytes((pattern,)) + _string(name)
    return head + _string(value)


class HeaderEncoder:
    """The server's HPACK encoder, with its own dynamic table.

    ``set_max_table_size`` follows the peer's SETTINGS_HEADER_TABLE_SIZE (never above what we
    start with); any change is announced at the start of the next block, as RFC 7541 4.2 asks
    (the smallest size first when it went down and up again).
    """

    __slots__ = (
        "_blocks",
        "_entries",
        "_generation",
        "_inserted",
        "_literals",
        "_max_size",
        "_pending_min",
        "_positions",
        "_size",
        "_unindexed",
        "_update_pending",
        "_upper_bound",
    )

    def __init__(self, max_size: int = 4096) -> None:
        self._upper_bound = max_size
        self._max_size = max_size
        self._size = 0
        # Oldest first; each entry is (name, value, size, insertion number).
        self._entries: deque[tuple[bytes, bytes, int, int]] = deque()
        self._inserted = 0  # insertion number of the next entry
        self._positions: dict[tuple[bytes, bytes], int] = {}  # field -> insertion number
        # Literal encodings, per representation: with incremental indexing, and never indexed.
        self._literals: BoundedCache[tuple[bytes, bytes], bytes] = BoundedCache(
            _LITERAL_CACHE_LIMIT
        )
        self._unindexed: BoundedCache[tuple[bytes, bytes], bytes] = BoundedCache(
            _LITERAL_CACHE_LIMIT
        )
        self._update_pending = False
        self._pending_min = max_size
        # Whole blocks that only referenced the table, valid while the table is unchanged.
        self._generation = 0  # bumped by every insertion, eviction and size change
        self._blocks: BoundedCache[tuple[tuple[bytes, bytes], ...], tuple[int, bytes]] = (
            BoundedCache(_BLOCK_CACHE_LIMIT)
        )

    def set_max_table_size(self, peer_setting: int) -> None:
        size = min(peer_setting, self._upper_bound)
        if size == self._max_size and not self._update_pending:
            return
        if not self._update_pending:
            self._pending_min = size
        self._pending_min = min(self._pending_min, size)
        self._update_pending = True
        self._max_size = size
        self._generation += 1
        self._evict(size)

    def _evict(self, limit: int) -> None:
        entries = self._entries
        positions = self._positions
        while self._size > limit and entries:
            name, value, size, number = entries.popleft()
            self._size -= size
            if positions.get((name, value)) == number:
                del positions[(name, value)]

    def encode(self, headers: Headers) -> bytes:
        key = tuple(headers)
        cached = self._blocks.get(key)
        if cached is not None and cached[0] == self._generation and not self._update_pending:
            return cached[1]
        generation = self._generation
        block = self._encode(headers)
        if self._generation == generation and len(key) <= _BLOCK_CACHE_FIELDS:
            self._blocks.remember(key, (generation, block))
        return block

    def _encode(self, headers: Headers) -> bytes:
        out: list[bytes] = []
        if self._update_pending:
            self._generation += 1
            self._update_pending = False
            if self._pending_min < self._max_size:
                out.append(encode_integer(self._pending_min, 5, 0x20))
            out.append(encode_integer(self._max_size, 5, 0x20))
        static = _STATIC_EXACT
        positions = self._positions
        literals = self._literals
        for field in headers:
            encoded = static.get(field)
            if encoded is not None:
                out.append(encoded)
                continue
            number = positions.get(field)
            if number is not None:
                index = _STATIC_SIZE + self._inserted - number
                out.append(
                    bytes((0x80 | index,)) if index < 127 else encode_integer(index, 7, 0x80)
                )
                continue
            name, value = field
            size = len(name) + len(value) + 32
            if name in _SENSITIVE or size > self._max_size // 2:
                literal = self._unindexed.get(field)
                if literal is None:
                    literal = self._unindexed.remember(field, _literal(name, value, 0x10, 4))
                out.append(literal)
                continue
            literal = literals.get(field)
            if literal is None:
                literal = literals.remember(field, _literal(name, value, 0x40, 6))
            out.append(literal)
            self._evict(self._max_size - size)
            self._generation += 1
            self._entries.append((name, value, size, self._inserted))
            positions[field] = self._inserted
            self._inserted += 1
            self._size += size
        return b"".join(out)


# -- HPACK decoding --------------------------------------------------------------------------


class HpackError(Exception):
    """An undecodable header block: a connection error of type COMPRESSION_ERROR."""


class HeaderListTooLarge(HpackError):
    """The block decodes to more than ``max_header_list_size`` (an HPACK bomb)."""


def _integer(block: bytes, position: int, value: int) -> tuple[int, int]:
    """The rest of an integer whose prefix was all ones (``value``), from ``position``."""
    shift = 0
    while True:
        if position >= len(block):
            raise HpackError("truncated integer")
        byte = block[position]
        position += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift > 28:
            raise HpackError("integer longer than 5 bytes")


def _string_at(block: bytes, position: int) -> tuple[bytes, int]:
    if position >= len(block):
        raise HpackError("truncated string")
    first = block[position]
    length = first & 0x7F
    position += 1
    if length == 0x7F:
        length, position = _integer(block, position, 0x7F)
    end = position + length
    if end > len(block):
        raise HpackError("truncated string")
    data = block[position:end]
    if first & 0x80:
        try:
            data = decode_huffman(data)
        except HPACKDecodingError as exc:
            raise HpackError(str(exc)) from None
    return data, end


class HeaderDecoder:
    """The server's HPACK decoder: a header block in, its fields out, or ``HpackError``.

    ``max_allowed_table_size`` is our SETTINGS_HEADER_TABLE_SIZE; the peer's size updates may
    not go above it, and once it is lowered the peer must shrink the table in its next block.
    """

    __slots__ = ("_entries", "_max_size", "_size", "max_allowed_table_size", "max_header_list_size")

    def __init__(self, max_header_list_size: int, max_table_size: int = 4096) -> None:
        self.max_header_list_size = max_header_list_size
        self.max_allowed_table_size = max_table_size
        self._max_size = 4096  # RFC 7541 4.2: where both ends start
        self._size = 0
        self._entries: deque[tuple[bytes, bytes]] = deque()  # newest first

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        limit = self.max_header_list_size
        total = 0
        position = 0
        end = len(block)
        while position < end:
            first = block[position]
            if first & 0x80:  # indexed field (6.1)
                index = first & 0x7F
                position += 1
                if index == 0x7F:
                    index, position = _integer(block, position, 0x7F)
                field = self._field(index)
            elif first & 0x40:  # literal with incremental indexing (6.2.1)
                field, position = self._literal(block, position, first & 0x3F, 0x3F)
                self._add(field)
            elif first & 0x20:  # dynamic table size update (6.3)
                if headers:
                    raise HpackError("table size update after a field")
                size = first & 0x1F
                position += 1
                if size == 0x1F:
                    size, position = _integer(block, position, 0x1F)
                if size > self.max_allowed_table_size:
                    raise HpackError(f"table size update to {size}, over the limit we set")
                self._max_size = size
                self._evict()
                continue
            else:  # literal without indexing or never indexed (6.2.2, 6.2.3)
                field, position = self._literal(block, position, first & 0x0F, 0x0F)
            headers.append(field)
            total += len(field[0]) + len(field[1]) + 32
            if total > limit:
                raise HeaderListTooLarge(f"a header list larger than {limit} bytes")
        if self._max_size > self.max_allowed_table_size:
            raise HpackError("the table was not shrunk to the size we set")
        return headers

    def _field(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_SIZE:
            return _STATIC[index - 1]
        position = index - _STATIC_SIZE - 1
        if index == 0 or position >= len(self._entries):
            raise HpackError(f"no table entry {index}")
        return self._entries[position]

    def _literal(
        self, block: bytes, position: int, name_index: int, prefix: int
    ) -> tuple[tuple[bytes, bytes], int]:
        position += 1
        if name_index == prefix:
            name_index, position = _integer(block, position, prefix)
        if name_index:
            name = self._field(name_index)[0]
        else:
            name, position = _string_at(block, position)
        value, position = _string_at(block, position)
        return (name, value), position

    def _add(self, field: tuple[bytes, bytes]) -> None:
        size = len(field[0]) + len(field[1]) + 32
        if size > self._max_size:  # RFC 7541 4.4: the table ends up empty, not an error
            self._entries.clear()
            self._size = 0
            return
        self._entries.appendleft(field)
        self._size += size
        self._evict()

    def _evict(self) -> None:
        entries = self._entries
        while self._size > self._max_size and entries:
            name, value = entries.pop()
            self._size -= len(name) + len(value) + 32
