"""The PROXY protocol (HAProxy's, versions 1 and 2): the real client behind a load balancer.

Theory of operation
-------------------
A proxy that speaks the PROXY protocol opens every connection with one header naming the
client it accepted (and the address the client reached), then relays the client's bytes
unchanged. ``ProxyProtocolReader`` parses that header incrementally: feed it bytes and it
answers ``NEED_DATA``, ``NO_HEADER`` (only when the header is optional and the bytes plainly do
not start one), or a ``ProxyHeader``; anything else raises ``ProxyProtocolError``. The bytes
after the header stay in ``reader.leftover``.

Version 1 is one text line, at most 107 bytes: ``PROXY TCP4|TCP6|UNKNOWN src dst sport
dport\\r\\n``. Version 2 is binary: a 12-byte signature, a version/command byte, a
family/protocol byte, a 16-bit length, the addresses (IPv4, IPv6 or unix paths) and then TLVs:
ALPN, authority (the SNI name), CRC32C (checked here), NOOP, unique id, and SSL with its
sub-TLVs. The whole header is bounded (``max_header_size``); the length field alone could
announce 64 KiB.

``ProxyProtocolConnection`` puts that in front of an endpoint's usual engine, the way
``PrefaceSniffer`` does: it refuses peers that are not trusted proxies, buffers until the header
is complete (or its deadline passes, which closes the connection without an answer), then
builds the inner engine (TLS included: TLS starts after the header) with a ``TransportInfo``
whose addresses are the header's, hands it the leftover bytes and rebinds its own methods to
the inner engine's (``core.switching.rebind``), so later calls cost nothing extra.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .context import Rejection, ServerContext, TransportInfo
from .errors import ConfigError, RemoteProtocolError
from .events import Event
from .flush import FlushFromState
from .switching import rebind

if TYPE_CHECKING:
    from .connection import EngineConnection

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # the spec's worst case, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = 16  # signature, version/command, family/protocol, length

# TLV types (section 2.2 of the spec).
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_TYPE_NETNS = 0x30

# PP2_CLIENT_* bits of the SSL TLV's first byte.
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04

UNIQUE_ID_MAX = 128
_SINGLE_TLVS = frozenset(
    {PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C, PP2_TYPE_UNIQUE_ID, PP2_TYPE_SSL}
)

# Families and address block sizes of version 2.
_FAMILIES = {0x0: "UNSPEC", 0x1: "INET", 0x2: "INET6", 0x3: "UNIX"}
_ADDRESS_SIZES = {"UNSPEC": 0, "INET": 12, "INET6": 36, "UNIX": 216}
_TRANSPORTS = {0x0: "UNSPEC", 0x1: "STREAM", 0x2: "DGRAM"}


class ProxyProtocolError(RemoteProtocolError):
    """A malformed, oversized or missing PROXY header. The connection closes unanswered."""

    def __init__(self, message: str, reason: str = "proxy_header_malformed") -> None:
        super().__init__(message, 400, reason)


class Need(enum.Enum):
    DATA = "need data"
    NO_HEADER = "no header"


NEED_DATA = Need.DATA
NO_HEADER = Need.NO_HEADER

Address = tuple[str, int] | str | None


@dataclass(frozen=True, slots=True)
class ProxySslInfo:
    """The SSL TLV: how the client talked to the proxy."""

    client: int  # PP2_CLIENT_* bits
    verify: int  # 0 when the client presented a certificate that verified
    version: str | None = None
    cn: str | None = None
    cipher: str | None = None
    sig_alg: str | None = None
    key_alg: str | None = None
    tlvs: dict[int, bytes] = field(default_factory=dict)

    @property
    def ssl(self) -> bool:
        return bool(self.client & PP2_CLIENT_SSL)


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One parsed header. ``source``/``destination`` are None when the proxy did not say
    (v1 UNKNOWN, v2 LOCAL or UNSPEC): the socket's own addresses stand then."""

    version: int  # 1 or 2
    command: str  # "PROXY" or "LOCAL"
    family: str  # "INET", "INET6", "UNIX" or "UNSPEC"
    source: Address = None
    destination: Address = None
    transport: str = "STREAM"  # v2: "STREAM", "DGRAM" or "UNSPEC"
    tlvs: dict[int, bytes] = field(default_factory=dict)
    alpn: bytes | None = None
    authority: str | None = None
    unique_id: bytes | None = None
    ssl: ProxySslInfo | None = None
    length: int = 0  # bytes the header took on the wire

    @property
    def has_addresses(self) -> bool:
        return self.command == "PROXY" and self.source is not None


# -- CRC32C (Castagnoli), as the CRC32C TLV needs it ------------------------------------------


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    table = _CRC32C_TABLE
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# -- version 1 -------------------------------------------------------------------------------


def _v1_port(text: bytes) -> int:
    if not (1 <= len(text) <= 5 and text.isdigit()) or (len(text) > 1 and text[0] == 0x30):
        raise ProxyProtocolError(f"PROXY v1: bad port {text[:8]!r}")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"PROXY v1: port {port} out of range")
    return port


def _v1_address(text: bytes, family: str) -> str:
    try:
        value = text.decode("ascii")
        if family == "INET":
            return str(ipaddress.IPv4Address(value))
        if "%" in value:
            raise ValueError("scope ids are not addresses")
        ipaddress.IPv6Address(value)
        return value
    except (UnicodeDecodeError, ValueError):
        raise ProxyProtocolError(f"PROXY v1: bad {family} address {text[:46]!r}") from None


def parse_v1(line: bytes, length: int) -> ProxyHeader:
    """``line`` is the header without its CRLF."""
    parts = line.split(b" ")
    if parts[0] != b"PROXY" or len(parts) < 2:
        raise ProxyProtocolError("PROXY v1: malformed header")
    if parts[1] == b"UNKNOWN":
        # The rest of the line is to be ignored (the proxy may not know the addresses).
        return ProxyHeader(1, "PROXY", "UNSPEC", transport="UNSPEC", length=length)
    if parts[1] == b"TCP4":
        family = "INET"
    elif parts[1] == b"TCP6":
        family = "INET6"
    else:
        raise ProxyProtocolError(f"PROXY v1: unknown protocol {parts[1][:8]!r}")
    if len(parts) != 6:
        raise ProxyProtocolError("PROXY v1: expected 4 fields after the protocol")
    source = (_v1_address(parts[2], family), _v1_port(parts[4]))
    destination = (_v1_address(parts[3], family), _v1_port(parts[5]))
    return ProxyHeader(1, "PROXY", family, source, destination, length=length)


# -- version 2 -------------------------------------------------------------------------------


def _unix_path(raw: bytes) -> str:
    if raw[:1] == b"\x00":  # Linux abstract namespace: keep the leading NUL
        return "\x00" + os.fsdecode(raw[1:].rstrip(b"\x00"))
    return os.fsdecode(raw.split(b"\x00", 1)[0])


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ProxyProtocolError(f"PROXY v2: {what} is not UTF-8") from None


def _tlvs(data: bytes | memoryview, start: int, end: int, what: str) -> list[tuple[int, int, int]]:
    """(type, value start, value end) for every TLV in ``data[start:end]``, bounds checked."""
    found = []
    pos = start
    while pos < end:
        if end - pos < 3:
            raise ProxyProtocolError(f"PROXY v2: truncated {what}")
        kind = data[pos]
        size = (data[pos + 1] << 8) | data[pos + 2]
        pos += 3
        if pos + size > end:
            raise ProxyProtocolError(f"PROXY v2: {what} 0x{kind:02x} overruns the header")
        found.append((kind, pos, pos + size))
        pos += size
    return found


def _ssl_info(value: bytes) -> ProxySslInfo:
    if len(value) < 5:
        raise ProxyProtocolError("PROXY v2: SSL TLV shorter than 5 bytes")
    client = value[0]
    (verify,) = struct.unpack_from("!I", value, 1)
    subs: dict[int, bytes] = {}
    for kind, start, end in _tlvs(value, 5, len(value), "SSL sub-TLV"):
        if kind in subs:
            raise ProxyProtocolError(f"PROXY v2: repeated SSL sub-TLV 0x{kind:02x}")
        subs[kind] = value[start:end]

    def text(kind: int, what: str) -> str | None:
        raw = subs.get(kind)
        return None if raw is None else _text(raw, what)

    return ProxySslInfo(
        client,
        verify,
        version=text(PP2_SUBTYPE_SSL_VERSION, "SSL version"),
        cn=text(PP2_SUBTYPE_SSL_CN, "SSL CN"),
        cipher=text(PP2_SUBTYPE_SSL_CIPHER, "SSL cipher"),
        sig_alg=text(PP2_SUBTYPE_SSL_SIG_ALG, "SSL signature algorithm"),
        key_alg=text(PP2_SUBTYPE_SSL_KEY_ALG, "SSL key algorithm"),
        tlvs=subs,
    )


def parse_v2(header: bytes) -> ProxyHeader:
    """``header`` is exactly one whole v2 header (signature through the last TLV)."""
    version_command = header[12]
    if version_command >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2: unsupported version {version_command >> 4}")
    command_bits = version_command & 0x0F
    if command_bits == 0:
        command = "LOCAL"
    elif command_bits == 1:
        command = "PROXY"
    else:
        raise ProxyProtocolError(f"PROXY v2: unknown command {command_bits}")
    family = _FAMILIES.get(header[13] >> 4)
    transport = _TRANSPORTS.get(header[13] & 0x0F)
    if family is None or transport is None:
        raise ProxyProtocolError(f"PROXY v2: unknown address family 0x{header[13]:02x}")
    end = len(header)
    address_end = _V2_FIXED + _ADDRESS_SIZES[family]
    if address_end > end:
        raise ProxyProtocolError(f"PROXY v2: length too short for a {family} address block")
    source: Address = None
    destination: Address = None
    if family == "INET":
        source = (str(ipaddress.IPv4Address(header[16:20])), (header[24] << 8) | header[25])
        destination = (str(ipaddress.IPv4Address(header[20:24])), (header[26] << 8) | header[27])
    elif family == "INET6":
        source = (str(ipaddress.IPv6Address(header[16:32])), (header[48] << 8) | header[49])
        destination = (str(ipaddress.IPv6Address(header[32:48])), (header[50] << 8) | header[51])
    elif family == "UNIX":
        source = _unix_path(header[16:124])
        destination = _unix_path(header[124:232])
    if command == "PROXY" and family != "UNSPEC" and transport != "STREAM":
        raise ProxyProtocolError(f"PROXY v2: {transport} is not a stream connection")

    tlvs: dict[int, bytes] = {}
    crc_at: int | None = None
    for kind, start, stop in _tlvs(header, address_end, end, "TLV"):
        if kind == PP2_TYPE_NOOP:
            continue
        if kind in tlvs:
            if kind in _SINGLE_TLVS:
                raise ProxyProtocolError(f"PROXY v2: repeated TLV 0x{kind:02x}")
            continue
        tlvs[kind] = header[start:stop]
        if kind == PP2_TYPE_CRC32C:
            if stop - start != 4:
                raise ProxyProtocolError("PROXY v2: CRC32C TLV is not 4 bytes")
            crc_at = start
    if crc_at is not None:
        expected = int.from_bytes(header[crc_at : crc_at + 4], "big")
        zeroed = header[:crc_at] + b"\x00\x00\x00\x00" + header[crc_at + 4 :]
        if crc32c(zeroed) != expected:
            raise ProxyProtocolError("PROXY v2: CRC32C mismatch", "proxy_header_checksum")
    unique_id = tlvs.get(PP2_TYPE_UNIQUE_ID)
    if unique_id is not None and len(unique_id) > UNIQUE_ID_MAX:
        raise ProxyProtocolError("PROXY v2: unique id longer than 128 bytes")
    authority = tlvs.get(PP2_TYPE_AUTHORITY)
    ssl_value = tlvs.get(PP2_TYPE_SSL)
    return ProxyHeader(
        2,
        command,
        family,
        source,
        destination,
        transport=transport,
        tlvs=tlvs,
        alpn=tlvs.get(PP2_TYPE_ALPN),
        authority=None if authority is None else _text(authority, "authority"),
        unique_id=unique_id,
        ssl=None if ssl_value is None else _ssl_info(ssl_value),
        length=end,
    )


# -- the incremental reader ------------------------------------------------------------------


class ProxyProtocolReader:
    """Feed bytes until a header (or an error) comes out. Not reusable after that."""

    def __init__(
        self,
        *,
        required: bool = True,
        versions: Iterable[int] = (1, 2),
        max_header_size: int = 4096,
    ) -> None:
        self._buffer = b""
        self._required = required
        self._versions = frozenset(versions)
        self._max = max(max_header_size, _V2_FIXED)
        self.leftover = b""

    def feed(self, data: bytes) -> ProxyHeader | Need:
        buffer = self._buffer = self._buffer + data
        head = buffer[:12]
        if V2_SIGNATURE.startswith(head) and 2 in self._versions:
            return self._v2(buffer) if len(head) == 12 else NEED_DATA
        if V1_PREFIX.startswith(buffer[:6]) and 1 in self._versions:
            return self._v1(buffer) if len(buffer) >= 6 else NEED_DATA
        if self._required:
            raise ProxyProtocolError("no PROXY header", "proxy_header_missing")
        self.leftover, self._buffer = buffer, b""
        return NO_HEADER

    def _v1(self, buffer: bytes) -> ProxyHeader | Need:
        newline = buffer.find(b"\n", 0, V1_MAX_LENGTH)
        if newline < 0:
            if len(buffer) >= V1_MAX_LENGTH:
                raise ProxyProtocolError("PROXY v1: header longer than 107 bytes")
            return NEED_DATA
        line = buffer[: newline - 1]
        if newline == 0 or buffer[newline - 1] != 0x0D or b"\r" in line:
            raise ProxyProtocolError("PROXY v1: header does not end with CRLF")
        header = parse_v1(line, newline + 1)
        self.leftover, self._buffer = buffer[newline + 1 :], b""
        return header

    def _v2(self, buffer: bytes) -> ProxyHeader | Need:
        if len(buffer) < _V2_FIXED:
            return NEED_DATA
        total = _V2_FIXED + ((buffer[14] << 8) | buffer[15])
        if total > self._max:
            raise ProxyProtocolError(
                f"PROXY v2: header of {total} bytes is over the limit of {self._max}",
                "proxy_header_too_large",
            )
        if len(buffer) < total:
            return NEED_DATA
        header = parse_v2(buffer[:total])
        self.leftover, self._buffer = buffer[total:], b""
        return header


# -- endpoint settings and the connection wrapper --------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv6Network("::1/128"),
)


@dataclass(frozen=True, slots=True)
class ProxyProtocolSettings:
    """PROXY protocol on one endpoint.

    ``trusted``: the networks a proxy may connect from (strings are accepted and parsed);
    connections from unix sockets (no peer address) are trusted. ``required=False`` also
    serves clients that connect directly without a header (an untrusted peer is served that
    way too, but is refused if it sends a header). ``timeout`` bounds the wait for the header.
    """

    trusted: tuple[Network, ...] = LOOPBACK
    required: bool = True
    timeout: float = 5.0
    versions: frozenset[int] = frozenset({1, 2})
    max_header_size: int = 4096

    def __post_init__(self) -> None:
        networks: list[Network] = []
        for entry in self.trusted:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"proxy_protocol.trusted: {entry!r} is not a network") from exc
        object.__setattr__(self, "trusted", tuple(networks))
        if not self.versions or not self.versions <= {1, 2}:
            raise ConfigError("proxy_protocol.versions must be a non-empty subset of {1, 2}")
        if self.timeout <= 0:
            raise ConfigError("proxy_protocol.timeout must be positive")
        if not _V2_FIXED <= self.max_header_size <= _V2_FIXED + 65535:
            raise ConfigError("proxy_protocol.max_header_size must be within 16..65551")

    def is_trusted(self, remote: tuple[str, int] | None) -> bool:
        if remote is None:
            return True
        try:
            address = ipaddress.ip_address(remote[0].split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted)


AfterHeader = Callable[[TransportInfo, float], "EngineConnection"]


def proxied_transport(transport: TransportInfo, header: ProxyHeader) -> TransportInfo:
    """The transport the inner engine sees: the header's addresses when it gave them."""
    if not header.has_addresses:
        return replace(transport, proxy=header)
    source = header.source
    return replace(
        transport,
        remote_address=source if isinstance(source, tuple) else None,
        local_address=header.destination,
        proxy=header,
    )


class ProxyProtocolConnection(FlushFromState):
    """Reads the PROXY header in front of an endpoint's engine, then steps aside."""

    def __init__(
        self,
        context: ServerContext,
        transport: TransportInfo,
        now: float,
        settings: ProxyProtocolSettings,
        after_header: AfterHeader,
    ) -> None:
        self._context = context
        self._transport = transport
        self._after_header = after_header
        self._trusted = settings.is_trusted(transport.remote_address)
        self._reader = ProxyProtocolReader(
            required=settings.required,
            versions=settings.versions,
            max_header_size=settings.max_header_size,
        )
        self._inner: Any = None
        self._deadline = now + settings.timeout
        self._closed = False
        # Refused before any byte: one deadline "now", so that an adapter that only looks
        # at should_close after a read or a timer learns it without waiting for the peer.
        self._wake_at: float | None = None
        self.connection_id = ""
        if not self._trusted and settings.required:
            self._refuse("untrusted_proxy", "PROXY header from a peer that is not a trusted proxy")
            self._wake_at = now

    def _refuse(self, reason: str, message: str) -> None:
        self._closed = True
        self.connection_id = self.connection_id or self._context.next_connection_id()
        self._context.record_rejection(
            Rejection(None, reason, message, self._transport.remote_address, self.connection_id)
        )

    def _start(self, transport: TransportInfo, leftover: bytes, now: float) -> list[Event]:
        inner = self._after_header(transport, now)
        if hasattr(inner, "front"):
            inner.front = self  # a later protocol switch rebinds this object too
        self._inner = inner
        rebind(self, inner)
        return inner.receive_data(leftover, now) if leftover else []

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if self._closed:
            return []
        if not data:
            self._closed = True
            return []
        reader = self._reader
        try:
            result = reader.feed(data)
        except ProxyProtocolError as exc:
            self._refuse(exc.reason, str(exc))
            return []
        if result is NEED_DATA:
            return []
        if result is NO_HEADER:
            return self._start(self._transport, reader.leftover, now)
        assert isinstance(result, ProxyHeader)
        if not self._trusted:
            self._refuse("untrusted_proxy", "PROXY header from a peer that is not a trusted proxy")
            return []
        return self._start(proxied_transport(self._transport, result), reader.leftover, now)

    def connection_lost(self, now: float) -> list[Event]:
        self._closed = True
        return []

    def on_timer(self, now: float) -> list[Event]:
        if self._closed:
            self._wake_at = None
        elif now >= self._deadline:
            self._refuse("proxy_header_timeout", "the PROXY header did not arrive in time")
        return []

    def next_deadline(self) -> float | None:
        return self._wake_at if self._closed else self._deadline

    def data_to_send(self) -> bytes:
        return b""

    def pop_events(self) -> list[Event]:
        return []

    @property
    def wants_read(self) -> bool:
        inner = self._inner
        return not self._closed if inner is None else bool(inner.wants_read)

    @property
    def should_close(self) -> bool:
        inner = self._inner
        return self._closed if inner is None else bool(inner.should_close)

    @property
    def should_abort(self) -> bool:
        inner = self._inner
        return False if inner is None else bool(inner.should_abort)

    @property
    def is_idle(self) -> bool:
        inner = self._inner
        return True if inner is None else bool(inner.is_idle)

    def set_write_blocked(self, blocked: bool, now: float, buffered: int = 0) -> None:
        pass

    def shutdown(self, now: float) -> list[Event]:
        self._closed = True
        return []
