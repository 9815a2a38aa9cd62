"""``ProxyProtocolReader`` fed raw bytes: versions 1 and 2, every TLV, and malformed input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pp_bytes import crc32c_ref, inet4, inet6, tlv, unix, v2, with_crc
from tiercel.core.proxy_protocol import (
    NEED_DATA,
    NO_HEADER,
    ProxyHeader,
    ProxyProtocolError,
    ProxyProtocolReader,
    crc32c,
)


def parse(data: bytes, **kwargs: object) -> ProxyHeader:
    reader = ProxyProtocolReader(**kwargs)  # type: ignore[arg-type]
    result = reader.feed(data)
    assert isinstance(result, ProxyHeader), result
    return result


def fails(data: bytes, reason: str = "proxy_header_malformed", **kwargs: object) -> str:
    reader = ProxyProtocolReader(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ProxyProtocolError) as info:
        reader.feed(data)
    assert info.value.reason == reason, info.value
    return str(info.value)


# -- version 1 -------------------------------------------------------------------------------


def test_v1_tcp4_and_leftover() -> None:
    reader = ProxyProtocolReader()
    header = reader.feed(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n")
    assert isinstance(header, ProxyHeader)
    assert header.version == 1 and header.command == "PROXY" and header.family == "INET"
    assert header.source == ("192.0.2.1", 56324)
    assert header.destination == ("198.51.100.2", 443)
    assert header.length == len(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n")
    assert reader.leftover == b"GET / HTTP/1.1\r\n"


def test_v1_tcp6() -> None:
    header = parse(b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n")
    assert header.family == "INET6"
    assert header.source == ("2001:db8::1", 65535)
    assert header.destination == ("::1", 0)


def test_v1_unknown_ignores_the_rest() -> None:
    header = parse(b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n")
    assert header.family == "UNSPEC" and header.source is None and not header.has_addresses
    assert parse(b"PROXY UNKNOWN\r\n").family == "UNSPEC"


def test_v1_worst_case_length_is_accepted() -> None:
    line = (
        b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
    )
    assert len(line) == 104
    assert parse(line).source == ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)
    unknown = b"PROXY UNKNOWN " + b"x" * (107 - 16) + b"\r\n"
    assert len(unknown) == 107
    assert parse(unknown).family == "UNSPEC"


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",  # a field short
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 x\r\n",  # a field too many
        b"PROXY TCP4  192.0.2.1 198.51.100.2 56324 443\r\n",  # double space
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 \r\n",  # trailing space
        b"PROXY TCP4 192.0.2.256 198.51.100.2 56324 443\r\n",
        b"PROXY TCP4 192.0.2.01 198.51.100.2 56324 443\r\n",  # leading zero octet
        b"PROXY TCP4 2001:db8::1 198.51.100.2 56324 443\r\n",  # v6 in TCP4
        b"PROXY TCP6 192.0.2.1 ::1 56324 443\r\n",  # v4 in TCP6
        b"PROXY TCP6 fe80::1%eth0 ::1 56324 443\r\n",  # scope id
        b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 056324 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 -1 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1_0 443\r\n",
        b"PROXY UDP4 192.0.2.1 198.51.100.2 56324 443\r\n",
        b"PROXY tcp4 192.0.2.1 198.51.100.2 56324 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n",  # bare LF
        b"PROXY TCP4 192.0.2.1\r198.51.100.2 56324 443\r\n",  # bare CR
        b"PROXY \r\n",
        b"PROXY TCP4 \xc0\xa8.0.0.1 198.51.100.2 56324 443\r\n",
    ],
)
def test_v1_malformed(line: bytes) -> None:
    fails(line)


def test_v1_too_long() -> None:
    fails(b"PROXY UNKNOWN " + b"x" * 120)
    fails(b"PROXY UNKNOWN " + b"x" * (108 - 16) + b"\r\n")


def test_v1_waits_for_the_line() -> None:
    reader = ProxyProtocolReader()
    for piece in (b"P", b"ROX", b"Y TCP4 192.0.2.1", b" 198.51.100.2 1 2\r"):
        assert reader.feed(piece) is NEED_DATA
    header = reader.feed(b"\nrest")
    assert isinstance(header, ProxyHeader) and header.source == ("192.0.2.1", 1)
    assert reader.leftover == b"rest"


def test_v1_only_when_enabled() -> None:
    fails(b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\n", "proxy_header_missing", versions=(2,))


# -- missing header --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"GET / HTTP/1.1\r\n", b"\x16\x03\x01", b"PROXX", b"\r\n\r\n\x01"]
)
def test_missing_header(data: bytes) -> None:
    fails(data, "proxy_header_missing")
    reader = ProxyProtocolReader(required=False)
    assert reader.feed(data) is NO_HEADER
    assert reader.leftover == data


def test_optional_header_still_waits_while_ambiguous() -> None:
    reader = ProxyProtocolReader(required=False)
    assert reader.feed(b"PRO") is NEED_DATA
    assert reader.feed(b"XY TCP4 192.0.2.1 198.51.100.2 1 2\r\nx") != NO_HEADER
    assert reader.leftover == b"x"
    reader = ProxyProtocolReader(required=False)
    assert reader.feed(b"PRI * HTTP/2.0") is NO_HEADER  # h2 preface shares "PR"


# -- version 2 -------------------------------------------------------------------------------


def test_v2_inet() -> None:
    reader = ProxyProtocolReader()
    header = reader.feed(v2() + b"\x16\x03\x01")
    assert isinstance(header, ProxyHeader)
    assert (header.version, header.command, header.family) == (2, "PROXY", "INET")
    assert header.source == ("192.0.2.10", 51000)
    assert header.destination == ("198.51.100.1", 443)
    assert header.transport == "STREAM" and header.tlvs == {}
    assert reader.leftover == b"\x16\x03\x01"


def test_v2_haproxy_capture() -> None:
    # Captured from haproxy 2.6 (send-proxy-v2), see reference/real-peers-and-tools.md.
    raw = bytes.fromhex("0d0a0d0a000d0a515549540a2111000c7f0000017f000001c7061f94")
    header = parse(raw)
    assert header.source == ("127.0.0.1", 50950)
    assert header.destination == ("127.0.0.1", 8084)


def test_v2_inet6() -> None:
    header = parse(v2(family=2, addresses=inet6("2001:db8::7", 1, "2001:db8::8", 8443)))
    assert header.family == "INET6"
    assert header.source == ("2001:db8::7", 1)
    assert header.destination == ("2001:db8::8", 8443)


def test_v2_unix() -> None:
    header = parse(v2(family=3, addresses=unix(b"/run/client.sock", b"/run/lb.sock")))
    assert header.family == "UNIX"
    assert header.source == "/run/client.sock"
    assert header.destination == "/run/lb.sock"
    abstract = parse(v2(family=3, addresses=unix(b"\x00abstract", b"/x")))
    assert abstract.source == "\x00abstract"


def test_v2_local_ignores_addresses() -> None:
    header = parse(v2(command=0, family=0, proto=0, addresses=b""))
    assert header.command == "LOCAL" and not header.has_addresses
    # LOCAL with an address block: the addresses are parsed but not to be used.
    local = parse(v2(command=0))
    assert local.command == "LOCAL" and not local.has_addresses


def test_v2_unspec_proxy() -> None:
    header = parse(v2(family=0, proto=0, addresses=b""))
    assert header.family == "UNSPEC" and not header.has_addresses


def test_v2_tlvs() -> None:
    ssl = (
        bytes([0x07])
        + b"\x00\x00\x00\x00"
        + tlv(0x21, b"TLSv1.3")
        + tlv(0x22, b"client.example")
        + tlv(0x23, b"TLS_AES_128_GCM_SHA256")
        + tlv(0x24, b"SHA256")
        + tlv(0x25, b"RSA2048")
    )
    tlvs = (
        tlv(0x01, b"h2")
        + tlv(0x02, "bücher.example".encode())
        + tlv(0x04, b"\x00" * 5)
        + tlv(0x04, b"")
        + tlv(0x05, b"u" * 128)
        + tlv(0x20, ssl)
        + tlv(0x30, b"netns")
        + tlv(0xE0, b"custom")
    )
    header = parse(v2(tlvs=tlvs))
    assert header.alpn == b"h2"
    assert header.authority == "bücher.example"
    assert header.unique_id == b"u" * 128
    assert header.tlvs[0x30] == b"netns" and header.tlvs[0xE0] == b"custom"
    assert 0x04 not in header.tlvs
    info = header.ssl
    assert info is not None and info.ssl and info.client == 7 and info.verify == 0
    assert info.version == "TLSv1.3" and info.cn == "client.example"
    assert info.cipher == "TLS_AES_128_GCM_SHA256"
    assert info.sig_alg == "SHA256" and info.key_alg == "RSA2048"


def test_v2_ssl_tlv_minimal() -> None:
    info = parse(v2(tlvs=tlv(0x20, b"\x00\x00\x00\x00\x01"))).ssl
    assert info is not None and not info.ssl and info.verify == 1 and info.version is None


def test_crc32c_matches_reference() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    for data in (b"", b"a", bytes(range(256)) * 3):
        assert crc32c(data) == crc32c_ref(data)


def test_v2_crc32c_good_and_bad() -> None:
    base = v2(tlvs=tlv(0x01, b"http/1.1"))
    header = parse(with_crc(base))
    assert 0x03 in header.tlvs and header.alpn == b"http/1.1"
    fails(with_crc(base, corrupt=True), "proxy_header_checksum")
    # Changing any byte after the checksum was computed breaks it too.
    good = bytearray(with_crc(base))
    good[17] ^= 0x40
    fails(bytes(good), "proxy_header_checksum")


@pytest.mark.parametrize(
    ("header", "what"),
    [
        (v2(version=1), "version"),
        (v2(version=3), "version"),
        (v2(command=2), "command"),
        (v2(family=4, addresses=b""), "family"),
        (v2(proto=3), "family"),
        (v2(proto=2), "stream"),  # DGRAM is no stream connection
        (v2(addresses=b"\x7f\x00\x00\x01"), "address block"),
        (v2(family=2, addresses=inet4("1.2.3.4", 1, "1.2.3.4", 2)), "address block"),
        (v2(family=3, addresses=b"/x".ljust(200, b"\x00")), "address block"),
        (v2(tlvs=b"\x01\x00"), "truncated"),
        (v2(tlvs=b"\x01\x00\x05ab"), "overruns"),
        (v2(tlvs=tlv(0x03, b"abc")), "CRC32C"),
        (v2(tlvs=tlv(0x05, b"u" * 129)), "unique id"),
        (v2(tlvs=tlv(0x01, b"h2") + tlv(0x01, b"h2")), "repeated"),
        (v2(tlvs=tlv(0x02, b"\xff\xfe")), "UTF-8"),
        (v2(tlvs=tlv(0x20, b"\x01\x00\x00")), "SSL"),
        (v2(tlvs=tlv(0x20, b"\x01\x00\x00\x00\x00\x21\x00\x09TLS")), "overruns"),
        (v2(tlvs=tlv(0x20, b"\x01\x00\x00\x00\x00" + tlv(0x22, b"\xff"))), "UTF-8"),
    ],
)
def test_v2_malformed(header: bytes, what: str) -> None:
    assert what.lower() in fails(header).lower()


def test_v2_truncated_waits_and_oversized_fails() -> None:
    header = v2(tlvs=tlv(0x05, b"id"))
    reader = ProxyProtocolReader()
    assert reader.feed(header[:-1]) is NEED_DATA
    assert isinstance(reader.feed(header[-1:]), ProxyHeader)
    fails(v2(length=65535), "proxy_header_too_large")
    fails(v2(tlvs=tlv(0xE1, b"x" * 4100)), "proxy_header_too_large")
    assert parse(v2(tlvs=tlv(0xE1, b"x" * 4100)), max_header_size=8192).tlvs[0xE1]


def test_v2_signature_variants_are_not_headers() -> None:
    fails(b"\r\n\r\n\x00\r\nQUIT\r", "proxy_header_missing")
    fails(b"\r\n\r\n\x00\r\nQUIT\n", "proxy_header_missing", versions=(1,))


# -- properties ------------------------------------------------------------------------------

VALID = [
    b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
    b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n",
    b"PROXY UNKNOWN\r\n",
    v2(),
    v2(family=2, addresses=inet6("2001:db8::7", 1, "2001:db8::8", 8443)),
    v2(family=3, addresses=unix(b"/a", b"/b")),
    v2(command=0, family=0, proto=0, addresses=b""),
    with_crc(v2(tlvs=tlv(0x01, b"h2") + tlv(0x02, b"example.com") + tlv(0x05, b"id"))),
    v2(tlvs=tlv(0x20, b"\x01\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.2"))),
]


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=300), required=st.booleans())
def test_random_bytes_only_raise_the_protocol_error(data: bytes, required: bool) -> None:
    reader = ProxyProtocolReader(required=required)
    with contextlib.suppress(ProxyProtocolError):
        reader.feed(data)


@settings(max_examples=400, deadline=None)
@given(
    prefix=st.sampled_from(
        [b"PROXY ", b"\r\n\r\n\x00\r\nQUIT\n\x21\x11", b"\r\n\r\n\x00\r\nQUIT\n"]
    ),
    data=st.binary(max_size=300),
)
def test_random_bodies_after_a_real_prefix(prefix: bytes, data: bytes) -> None:
    with contextlib.suppress(ProxyProtocolError):
        ProxyProtocolReader().feed(prefix + data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_valid_headers_split_anywhere_parse_the_same(data: st.DataObject) -> None:
    raw = data.draw(st.sampled_from(VALID))
    tail = data.draw(st.binary(max_size=20))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    whole = ProxyProtocolReader()
    expected = whole.feed(raw + tail)
    reader = ProxyProtocolReader()
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    pieces = [piece for piece in pieces if piece]
    result: object = NEED_DATA
    for piece in pieces:
        assert result is NEED_DATA
        result = reader.feed(piece)
    if result is NEED_DATA:
        result = reader.feed(tail)
    else:
        reader.leftover += tail
    assert result == expected
    assert reader.leftover == whole.leftover == tail


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_valid_headers_only_raise_the_protocol_error(data: st.DataObject) -> None:
    raw = bytearray(data.draw(st.sampled_from(VALID)))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(ProxyProtocolError):
        ProxyProtocolReader().feed(bytes(raw))
