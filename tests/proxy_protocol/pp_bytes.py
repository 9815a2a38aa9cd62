"""Builders for PROXY protocol headers, byte by byte, independent of the parser under test."""

from __future__ import annotations

import ipaddress
import struct

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def v2(
    *,
    command: int = 1,
    family: int = 1,
    proto: int = 1,
    addresses: bytes | None = None,
    tlvs: bytes = b"",
    version: int = 2,
    length: int | None = None,
) -> bytes:
    if addresses is None:
        addresses = inet4("192.0.2.10", 51000, "198.51.100.1", 443) if family == 1 else b""
    body = addresses + tlvs
    size = len(body) if length is None else length
    return (
        SIG
        + bytes([(version << 4) | command, (family << 4) | proto])
        + struct.pack("!H", size)
        + body
    )


def inet4(src: str, sport: int, dst: str, dport: int) -> bytes:
    return (
        ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )


def inet6(src: str, sport: int, dst: str, dport: int) -> bytes:
    return (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )


def unix(src: bytes, dst: bytes) -> bytes:
    return src.ljust(108, b"\x00") + dst.ljust(108, b"\x00")


def crc32c_ref(data: bytes) -> int:
    """A bitwise CRC32C, deliberately not table-driven (an independent check)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def with_crc(header_without_crc: bytes, *, corrupt: bool = False) -> bytes:
    """Appends a CRC32C TLV (fixing the length field) and fills in the checksum."""
    grown = header_without_crc + tlv(0x03, b"\x00\x00\x00\x00")
    size = len(grown) - 16
    grown = grown[:14] + struct.pack("!H", size) + grown[16:]
    crc = crc32c_ref(grown) ^ (1 if corrupt else 0)
    return grown[:-4] + struct.pack("!I", crc)
