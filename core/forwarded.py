"""Forwarded headers and host filtering, with the semantics of ASP.NET Core's
``ForwardedHeadersMiddleware`` and ``HostFilteringMiddleware``.

Theory of operation
-------------------
A reverse proxy that forwards a request appends what it saw to ``X-Forwarded-For`` (the client
address), ``-Proto`` (the scheme), ``-Host`` (the Host header) and ``-Prefix`` (the path base it
stripped), or writes the same facts as elements of the RFC 7239 ``Forwarded`` header. Anyone can
send these headers, so they are believed only while the *sender* is a known proxy:

1. The lists are read right to left. The rightmost entries were written by the proxy that
   connected to us (the connection's peer); entry *i* from the right pairs the *i*-th values of
   each header (ASP.NET's sets; with ``RequireHeaderSymmetry`` off, a missing value is skipped).
2. Before each set is taken, the current sender must be in ``known_networks``; the first sender
   is the socket peer, the next one is the client address the previous set named. At most
   ``forward_limit`` sets are taken.
3. A ``for`` value that is not a valid node stops the walk; what was applied so far stays. A
   ``for`` of ``unknown`` or an obfuscated identifier (RFC 7239 6.2, 6.3) is valid: that set's
   proto/host/prefix are applied, the client address is left as it was, and the walk stops
   there (there is no address left to check the next sender against). ASP.NET stops before such
   an entry instead. An invalid proto, host or prefix is just not applied.
4. The results replace ``stream.remote_address`` (ASGI ``client``), ``stream.scheme``, the
   ``host`` header and ``stream.path_base`` (ASGI ``root_path``; ``path`` keeps ASGI's rule of
   including it). A forwarded prefix goes in front of the server's own ``root_path`` when that
   was found in the path: ``/edge`` + ``/app``. The consumed entries are removed from their
   header, and the values they replaced are kept in ``x-original-for`` / ``-proto`` /
   ``-host`` / ``-prefix``. ASGI's ``server`` stays the socket's local address: like ASP.NET,
   only the Host header changes.

When both families are enabled and a request carries any of the enabled ``X-Forwarded-*``
headers, those are used and ``Forwarded`` is ignored; otherwise ``Forwarded`` is used. Enable only
the family your proxy writes: a proxy that writes one family and passes the other through from
the client would otherwise let the client choose.

A peer without an address (a Unix socket) counts as trusted for the first set, as in ASP.NET:
only local processes can reach such a socket.

Host filtering runs afterwards on the (possibly forwarded) Host: when ``allowed_hosts`` is set,
a request whose host is not in it is refused with 400 before any app runs. Ports are ignored,
comparison is case-insensitive over the IDNA (punycode) form, ``*.example.com`` matches
subdomains but not ``example.com`` itself, and ``*`` matches anything. A request without a Host
(HTTP/1.0) is let through, like ASP.NET's ``AllowEmptyHosts``.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

from .errors import ConfigError, RemoteProtocolError

if TYPE_CHECKING:
    from .stream import HttpStream

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class ForwardedHeaders(enum.Flag):
    """Which headers to process. The X-Forwarded-* values match ASP.NET's flags."""

    NONE = 0
    X_FORWARDED_FOR = 1
    X_FORWARDED_HOST = 2
    X_FORWARDED_PROTO = 4
    X_FORWARDED_PREFIX = 8
    FORWARDED = 16  # RFC 7239 (for, proto, host)
    X_FORWARDED_ALL = X_FORWARDED_FOR | X_FORWARDED_HOST | X_FORWARDED_PROTO | X_FORWARDED_PREFIX
    ALL = X_FORWARDED_ALL | FORWARDED


DEFAULT_KNOWN_NETWORKS: tuple[Network, ...] = (
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv6Network("::1/128"),
)


def parse_networks(text: str, setting: str = "known_networks") -> tuple[Network, ...]:
    """``"10.0.0.0/8, ::1"`` -> networks; a bare address is a one-address network."""
    out: list[Network] = []
    for item in text.split(","):
        if item.strip():
            out.append(_network(item.strip(), setting))
    return tuple(out)


def _network(value: object, setting: str) -> Network:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ipaddress.ip_network(value)
    if not isinstance(value, str):
        raise ConfigError(f"{setting}: expected a network like '10.0.0.0/8' (got {value!r})")
    try:
        return ipaddress.ip_network(value.strip())
    except ValueError as exc:
        raise ConfigError(
            f"{setting}: {value!r} is not a network: {exc} (write e.g. '10.0.0.0/8' or '::1')"
        ) from None


_WILDCARD_LABEL = re.compile(r"[a-z0-9\-_]+")


def _normalize_allowed_host(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"allowed_hosts: each entry must be a host name (got {value!r})")
    host = value.strip().lower()
    if host == "*":
        return host
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return f"[{address.compressed}]" if address.version == 6 else address.compressed
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    if ":" in name:
        raise ConfigError(f"allowed_hosts: {value!r}: leave the port out (ports are ignored)")
    if "*" in name:
        raise ConfigError(
            f"allowed_hosts: {value!r}: the only wildcards are '*' and a leading '*.'"
        )
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ConfigError(f"allowed_hosts: {value!r} is not a valid host name: {exc}") from None
    if not all(_WILDCARD_LABEL.fullmatch(label) for label in name.split(".")):
        raise ConfigError(f"allowed_hosts: {value!r} is not a valid host name")
    return ("*." if wildcard else "") + name


@dataclass(frozen=True, slots=True)
class ForwardedOptions:
    """``ForwardedHeadersOptions`` plus ``HostFilteringOptions.AllowedHosts``.

    ``headers`` is off by default, as in ASP.NET. ``known_networks`` accepts networks,
    addresses or strings ("10.0.0.0/8", "::1"). ``forward_limit`` None means no limit.
    ``allowed_hosts`` empty allows any host.
    """

    headers: ForwardedHeaders = ForwardedHeaders.NONE
    known_networks: tuple[Network, ...] = DEFAULT_KNOWN_NETWORKS
    forward_limit: int | None = 1
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.headers, ForwardedHeaders):
            raise ConfigError(
                f"forwarded headers must be a ForwardedHeaders flag (got {self.headers!r})"
            )
        raw_networks: object = self.known_networks
        if isinstance(raw_networks, str):
            networks = parse_networks(raw_networks)
        else:
            networks = tuple(_network(n, "known_networks") for n in self.known_networks)
        if self.headers and not networks:
            raise ConfigError(
                "known_networks is empty, so no proxy would be trusted; to trust every sender "
                "(what ASP.NET does with empty lists) give 0.0.0.0/0 and ::/0"
            )
        object.__setattr__(self, "known_networks", networks)
        limit = self.forward_limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise ConfigError(f"forward_limit must be an integer or None (got {limit!r})")
        if limit is not None and limit < 1:
            raise ConfigError(f"forward_limit must be >= 1 (got {limit}); use None for no limit")
        raw_hosts: object = self.allowed_hosts
        hosts = raw_hosts.split(",") if isinstance(raw_hosts, str) else self.allowed_hosts
        object.__setattr__(self, "allowed_hosts", tuple(_normalize_allowed_host(h) for h in hosts))

    def trusts(self, host: str) -> bool:
        try:
            address: Address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            mapped = address.ipv4_mapped
            if any(mapped in network for network in self.known_networks):
                return True
        return any(address in network for network in self.known_networks)


# -- parsing -------------------------------------------------------------------------------

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{0,5})?")
_PORT = re.compile(r"[0-9]{1,5}")
_OBFUSCATED = re.compile(r"_[A-Za-z0-9._\-]+")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PATH = re.compile(r"(?:/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})*)+")

UNKNOWN = "unknown"  # a valid node that names no address (the result of _node)


def _node(text: str, *, rfc7239: bool) -> tuple[str, int] | str | None:
    """A ``for`` value: ``(host, port)`` for an address, ``UNKNOWN`` for ``unknown`` or an
    obfuscated node, None when invalid. RFC 7239 wants IPv6 in brackets; X-Forwarded-For
    also takes it bare (without a port)."""
    if text.lower() == "unknown" or _OBFUSCATED.fullmatch(text):
        return UNKNOWN
    port_text = ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port_text = rest[1:]
        version = 6
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        version = 4
    elif ":" in text:
        if rfc7239:
            return None
        host, version = text, 6
    else:
        host, version = text, 4
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.version != version:
        return None
    port = 0
    if port_text:
        if _PORT.fullmatch(port_text):
            port = int(port_text)
            if port > 65535:
                return None
        elif not (rfc7239 and _OBFUSCATED.fullmatch(port_text)):
            return None
    return (address.compressed, port)


def _split_list(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str] | None:
    """The comma-separated entries of every ``name`` line, trimmed, empty ones dropped; None
    when the header is absent."""
    values = [v for n, v in headers if n == name]
    if not values:
        return None
    text = ",".join(v.decode("latin-1") for v in values)
    return [item for item in (part.strip(" \t") for part in text.split(",")) if item]


@dataclass(slots=True)
class _Set:
    node: str | None = None  # the raw for value
    proto: str | None = None
    host: str | None = None
    prefix: str | None = None
    valid: bool = True  # False: a malformed Forwarded element, which stops the walk


def _parse_element(text: str) -> _Set:
    """One RFC 7239 forwarded-element: ``pair *( ";" [ pair ] )``, parsed strictly."""
    current = _Set()
    seen: set[str] = set()
    length = len(text)
    i = 0
    while i < length:
        while i < length and text[i] in " \t":
            i += 1
        if i < length and text[i] != ";":
            match = _TOKEN.match(text, i)
            if match is None or match.end() >= length or text[match.end()] != "=":
                return _Set(valid=False)
            key = match.group().lower()
            i = match.end() + 1
            if i < length and text[i] == '"':
                chars: list[str] = []
                i += 1
                while i < length and text[i] != '"':
                    if text[i] == "\\":
                        i += 1
                        if i >= length:
                            return _Set(valid=False)
                    chars.append(text[i])
                    i += 1
                if i >= length:
                    return _Set(valid=False)  # no closing quote
                i += 1
                value = "".join(chars)
            else:
                match = _TOKEN.match(text, i)
                if match is None:
                    return _Set(valid=False)
                value, i = match.group(), match.end()
            if key in seen:
                return _Set(valid=False)  # RFC 7239 4: a parameter at most once per element
            seen.add(key)
            if key == "for":
                current.node = value
            elif key == "proto":
                current.proto = value
            elif key == "host":
                current.host = value
            while i < length and text[i] in " \t":
                i += 1
        if i < length:
            if text[i] != ";":
                return _Set(valid=False)
            i += 1
    return current


def _valid_prefix(value: str) -> str | None:
    if not _PATH.fullmatch(value):
        return None
    return unquote(value).rstrip("/")


_X_FOR, _X_PROTO, _X_HOST, _X_PREFIX = (
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-forwarded-prefix",
)


def _format_endpoint(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _host_of(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"host":
            return value
    return None


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether a Host value (port ignored) matches one of the normalized ``allowed`` hosts."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[: host.find("]") + 1]
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return False
    else:
        host = host.partition(":")[0]
        if not host.isascii():
            try:
                host = host.encode("idna").decode("ascii")
            except UnicodeError:
                return False
    for pattern in allowed:
        if pattern in ("*", host):
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
            return True
    return False


# -- the request rewrite -------------------------------------------------------------------


def apply_forwarded(stream: HttpStream, options: ForwardedOptions) -> RemoteProtocolError | None:
    """Apply the forwarded headers to a new stream, then filter its host.

    Returns the error to answer with (400, host not allowed), or None to run the app."""
    if options.headers:
        _apply(stream, options)
    if options.allowed_hosts:
        host = _host_of(stream.headers)
        if host is not None and not host_allowed(host.decode("latin-1"), options.allowed_hosts):
            return RemoteProtocolError("host not allowed", 400, "host_not_allowed", f": {host!r}")
    return None


def _apply(stream: HttpStream, options: ForwardedOptions) -> None:
    flags = options.headers
    headers = stream.headers
    x_lists: dict[bytes, list[str] | None] = {}
    for flag, name in (
        (ForwardedHeaders.X_FORWARDED_FOR, _X_FOR),
        (ForwardedHeaders.X_FORWARDED_PROTO, _X_PROTO),
        (ForwardedHeaders.X_FORWARDED_HOST, _X_HOST),
        (ForwardedHeaders.X_FORWARDED_PREFIX, _X_PREFIX),
    ):
        if flag & flags:
            x_lists[name] = _split_list(headers, name)
    rfc7239 = not any(v is not None for v in x_lists.values())
    sets: list[_Set]
    members: list[str] = []
    if rfc7239:
        if not flags & ForwardedHeaders.FORWARDED:
            return
        values = [v.decode("latin-1") for n, v in headers if n == b"forwarded"]
        if not values:
            return
        members = _split_elements(",".join(values))
        sets = [_parse_element(member) for member in reversed(members)]  # right to left
    else:
        fors, protos = x_lists.get(_X_FOR) or [], x_lists.get(_X_PROTO) or []
        hosts, prefixes = x_lists.get(_X_HOST) or [], x_lists.get(_X_PREFIX) or []
        count = max(len(fors), len(protos), len(hosts), len(prefixes))
        sets = [
            _Set(
                node=fors[-1 - i] if i < len(fors) else None,
                proto=protos[-1 - i] if i < len(protos) else None,
                host=hosts[-1 - i] if i < len(hosts) else None,
                prefix=prefixes[-1 - i] if i < len(prefixes) else None,
            )
            for i in range(count)
        ]
    if options.forward_limit is not None:
        sets = sets[: options.forward_limit]

    remote = stream.remote_address
    new_remote: tuple[str, int] | None = None
    new_scheme = new_host = new_prefix = None
    consumed = 0
    for entry in sets:
        if not entry.valid:
            break
        if remote is not None and not options.trusts(remote[0]):
            break  # the sender is not a known proxy: stop, keep what was applied
        stop_after = False
        if entry.node is not None:
            node = _node(entry.node, rfc7239=rfc7239)
            if node is None:
                break  # ASP.NET: an unparsable address stops the walk
            if node == UNKNOWN:
                stop_after = True
            else:
                assert isinstance(node, tuple)
                remote = new_remote = node
        elif rfc7239:
            stop_after = True  # an element without 'for' names no next sender
        if entry.proto is not None and _SCHEME.fullmatch(entry.proto):
            new_scheme = entry.proto.lower()
        if (
            entry.host is not None
            and _HOST.fullmatch(entry.host)
            and (not options.allowed_hosts or host_allowed(entry.host, options.allowed_hosts))
        ):
            new_host = entry.host
        if entry.prefix is not None:
            prefix = _valid_prefix(entry.prefix)
            if prefix is not None:
                new_prefix = prefix
        consumed += 1
        if stop_after:
            break
    if not consumed:
        return

    # Rewrite: drop the consumed entries, keep the values they replace in x-original-*.
    originals: list[tuple[bytes, bytes]] = []
    remaining: dict[bytes, list[str]] = {}
    if rfc7239:
        remaining = {b"forwarded": members[: len(members) - consumed]}
    else:
        for name, entries in x_lists.items():
            if entries is not None:
                remaining[name] = entries[: max(len(entries) - consumed, 0)]
    if new_remote is not None:
        if stream.remote_address is not None:
            originals.append((b"x-original-for", _format_endpoint(stream.remote_address).encode()))
        stream.remote_address = new_remote
    if new_scheme is not None:
        originals.append((b"x-original-proto", stream.scheme.encode("latin-1")))
        stream.scheme = new_scheme
    host_value: bytes | None = None
    if new_host is not None:
        old = _host_of(headers)
        if old is not None:
            originals.append((b"x-original-host", old))
        host_value = new_host.encode("latin-1")
    if new_prefix is not None:
        originals.append((b"x-original-prefix", stream.path_base.encode("utf-8")))
        # The proxy stripped its prefix before our root_path: it goes in front of it, as with
        # ASP.NET's UseForwardedHeaders followed by UsePathBase.
        stream.path_base = new_prefix + stream.path_base

    rewritten: list[tuple[bytes, bytes]] = []
    host_done = False
    for name, value in headers:
        if name in remaining:
            entries = remaining[name]
            if entries:  # the first line carries what is left; the others go
                rewritten.append((name, ", ".join(entries).encode("latin-1")))
                remaining[name] = []
            continue
        if name == b"host" and host_value is not None:
            if not host_done:
                rewritten.append((name, host_value))
                host_done = True
            continue
        if name.startswith(b"x-original-") and name in {n for n, _ in originals}:
            continue  # replaced by ours below
        rewritten.append((name, value))
    if host_value is not None and not host_done:
        rewritten.insert(0, (b"host", host_value))
    rewritten.extend(originals)
    stream.headers = rewritten


def _split_elements(text: str) -> list[str]:
    """Top-level comma-separated members of a Forwarded value (quotes respected), trimmed,
    empty ones dropped."""
    out: list[str] = []
    start = 0
    quoted = False
    i = 0
    while i < len(text):
        char = text[i]
        if quoted and char == "\\":
            i += 1
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            out.append(text[start:i])
            start = i + 1
        i += 1
    out.append(text[start:])
    return [item.strip(" \t") for item in out if item.strip(" \t")]
