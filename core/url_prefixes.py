"""HTTP.sys URL prefixes (``http://+:80/api/``) and the table that routes a request to one.

Theory of operation. A prefix is ``scheme://host:port/path/``. Its host puts it in one of four
buckets, checked in this order for every request (the HTTP Server API's "Routing Incoming
Requests" rules):

1. strong wildcard ``+``: every host name;
2. explicit host (``example.com``): the request's ``Host`` header, case-insensitively;
3. IP-bound weak wildcard (``127.0.0.1``, ``[::1]``): any host name, when the request arrived on
   that local IP address;
4. weak wildcard ``*``: any host name, as a last resort.

Scheme and port must match exactly. Inside a bucket the longest matching path wins; the search
stops at the first bucket with a match, so ``http://+:80/api/`` takes ``/api/x`` even from a
host that also has an explicit ``http://example.com:80/`` registration. Paths compare
case-insensitively and on segment boundaries: ``/api/`` takes ``/api``, ``/api/`` and
``/API/x`` but not ``/apix``. The matched part of the request path, in the request's own
spelling and without the trailing slash, becomes the app's path base (ASGI ``root_path``).

Parsing decisions, where HTTP.sys itself is stricter or looser:

- the scheme is ``http`` or ``https`` in any case (written back lowercase);
- a missing port means 80 for http and 443 for https, as ASP.NET Core's ``UrlPrefix.Create``
  does; port 0 and leading zeros are refused (HTTP.sys needs a fixed port);
- a missing trailing slash is added (``/api`` means ``/api/``), again as ASP.NET Core does;
- ``0.0.0.0`` and ``::`` are refused: they name no interface, and ``+``/``*`` say "all" clearly;
- percent escapes in the path are decoded, because request paths are compared decoded.

Sans-IO: no sockets; the caller passes what it knows about the request.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import unquote

from .errors import ConfigError

__all__ = [
    "HostKind",
    "PrefixMatch",
    "PrefixTable",
    "UrlPrefix",
    "host_from_header",
    "match_path_base",
    "parse_url_prefix",
]

Target = TypeVar("Target")

DEFAULT_PORTS = {"http": 80, "https": 443}

# A DNS label: letters (any script, since HTTP.sys takes Unicode names), digits, '-' and '_'.
_LABEL = re.compile(r"^[^\W][\w-]*$")


class HostKind(enum.IntEnum):
    """The four host buckets; a lower value is checked first."""

    STRONG_WILDCARD = 0
    EXPLICIT = 1
    IP_BOUND = 2
    WEAK_WILDCARD = 3


@dataclass(frozen=True, slots=True)
class UrlPrefix:
    text: str = field(compare=False)  # as the user wrote it
    scheme: str  # "http" or "https"
    host_kind: HostKind
    host: str  # "+", "*", a lowercase name, or an IP address without brackets
    port: int
    path: str  # decoded, starts and ends with "/"
    segments: tuple[str, ...] = field(repr=False, compare=False)  # lowercase path segments

    @property
    def path_base(self) -> str:
        """The path without its trailing slash: "" for "/", "/api" for "/api/"."""
        return self.path[:-1]

    @property
    def canonical(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    def key(self) -> tuple[str, HostKind, str, int, tuple[str, ...]]:
        """What makes two prefixes the same registration (host and path compare caselessly)."""
        return (self.scheme, self.host_kind, _ascii_host(self.host), self.port, self.segments)

    def __str__(self) -> str:
        return self.canonical


def _bad(text: str, why: str) -> ConfigError:
    return ConfigError(f"invalid URL prefix {text!r}: {why}")


def parse_url_prefix(text: str) -> UrlPrefix:
    """Parse one HTTP.sys URL prefix, or raise ConfigError naming what is wrong and the fix."""
    value = text.strip()
    if not value:
        raise _bad(text, "it is empty; write e.g. http://+:80/api/")
    scheme_text, sep, rest = value.partition("://")
    if not sep:
        raise _bad(text, "no scheme; write http://HOST:PORT/PATH/, e.g. http://+:80/api/")
    scheme = scheme_text.lower()
    if scheme not in DEFAULT_PORTS:
        raise _bad(text, f"the scheme must be http or https (got {scheme_text!r})")
    for char, name in (("?", "query string"), ("#", "fragment")):
        if char in rest:
            raise _bad(text, f"a URL prefix cannot have a {name}; remove everything from {char!r}")
    slash = rest.find("/")
    authority, raw_path = (rest, "/") if slash == -1 else (rest[:slash], rest[slash:])
    if "@" in authority:
        raise _bad(text, "a URL prefix cannot carry a user name or password")
    host_text, port_text = _split_authority(text, authority)
    host_kind, host = _classify_host(text, host_text)
    port = _parse_port(text, scheme, port_text)
    path, segments = _parse_path(text, raw_path)
    return UrlPrefix(text, scheme, host_kind, host, port, path, segments)


def _split_authority(text: str, authority: str) -> tuple[str, str | None]:
    if not authority:
        raise _bad(text, "no host; use + for every host name, or a name such as example.com")
    if authority.startswith("["):
        close = authority.find("]")
        if close == -1:
            raise _bad(text, "unclosed '[' in an IPv6 address")
        host, rest = authority[: close + 1], authority[close + 1 :]
        if rest and not rest.startswith(":"):
            raise _bad(text, f"unexpected {rest!r} after the IPv6 address")
        return host, rest[1:] if rest else None
    host, colon, port = authority.rpartition(":")
    if not colon:
        return authority, None
    if ":" in host:
        raise _bad(text, "an IPv6 address must be in brackets, e.g. http://[::1]:80/")
    return host, port


def _classify_host(text: str, host: str) -> tuple[HostKind, str]:
    if host == "+":
        return HostKind.STRONG_WILDCARD, "+"
    if host == "*":
        return HostKind.WEAK_WILDCARD, "*"
    if not host:
        raise _bad(text, "no host; use + for every host name, or a name such as example.com")
    if host.startswith("["):
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(
                host[1:-1]
            )
        except ValueError:
            raise _bad(text, f"{host} is not an IPv6 address") from None
        return _ip_host(text, address)
    if re.fullmatch(r"[0-9.]+", host):
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            raise _bad(text, f"{host!r} is not an IPv4 address (four numbers 0-255)") from None
        return _ip_host(text, address)
    if "*" in host or "+" in host:
        raise _bad(
            text, f"{host!r}: HTTP.sys has no partial wildcards; the host is +, * or a full name"
        )
    name = host.rstrip(".").lower()
    labels = name.split(".")
    if not name or not all(_LABEL.match(label) for label in labels):
        raise _bad(text, f"{host!r} is not a host name, an IP address, + or *")
    try:
        _ascii_host(name)
    except UnicodeError:
        raise _bad(text, f"{host!r} is not a valid internationalised host name") from None
    return HostKind.EXPLICIT, name


def _ip_host(
    text: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> tuple[HostKind, str]:
    if address.is_unspecified:
        raise _bad(
            text, f"{address} names no interface; use + (or *) to take requests on every address"
        )
    return HostKind.IP_BOUND, str(address)


def _parse_port(text: str, scheme: str, port_text: str | None) -> int:
    if port_text is None:
        return DEFAULT_PORTS[scheme]
    if not port_text:
        raise _bad(text, "empty port after ':'; give a number from 1 to 65535")
    if not port_text.isascii() or not port_text.isdigit():
        raise _bad(text, f"port {port_text!r} is not a number from 1 to 65535")
    if port_text.startswith("0"):
        raise _bad(
            text,
            f"port {port_text!r}: HTTP.sys needs a fixed port from 1 to 65535 "
            "without leading zeros",
        )
    port = int(port_text)
    if port > 65535:
        raise _bad(text, f"port {port} is not a number from 1 to 65535")
    return port


def _parse_path(text: str, raw_path: str) -> tuple[str, tuple[str, ...]]:
    path = unquote(raw_path)
    if not path.endswith("/"):
        path += "/"
    parts = path[1:-1].split("/") if path != "/" else []
    for part in parts:
        if part == "":
            raise _bad(text, "the path has an empty segment ('//'); write e.g. /api/v1/")
        if part in (".", ".."):
            raise _bad(text, f"the path cannot contain a {part!r} segment")
    return path, tuple(part.lower() for part in parts)


def _ascii_host(host: str) -> str:
    """The form a client puts in ``Host``: IDNA for Unicode names, lowercase."""
    if host.isascii():
        return host.lower()
    return host.encode("idna").decode("ascii").lower()


def host_from_header(value: str) -> str:
    """The host name in a ``Host`` header value: no port, no brackets, lowercase, no final dot."""
    host = value.strip()
    if host.startswith("["):
        close = host.find("]")
        return host[1:close].lower() if close != -1 else ""
    host = host.rpartition(":")[0] if ":" in host else host
    return host.rstrip(".").lower()


def _normal_ip(value: str | None) -> str | None:
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@dataclass(frozen=True, slots=True)
class PrefixMatch(Generic[Target]):
    prefix: UrlPrefix
    target: Target
    path_base: str  # the matched part of the request path, in the request's spelling
    remaining_path: str  # the rest: "" or starts with "/"


class PrefixTable(Generic[Target]):
    """Registered prefixes, each with a target (an app, a queue...), matched HTTP.sys's way."""

    def __init__(self, registrations: Iterable[tuple[UrlPrefix, Target]] = ()) -> None:
        self._registrations: list[tuple[UrlPrefix, Target]] = []
        self._seen: dict[tuple[str, HostKind, str, int, tuple[str, ...]], UrlPrefix] = {}
        self._buckets: dict[tuple[str, int, HostKind], list[tuple[UrlPrefix, Target]]] = {}
        for prefix, target in registrations:
            self.add(prefix, target)

    def add(self, prefix: UrlPrefix, target: Target) -> None:
        earlier = self._seen.get(prefix.key())
        if earlier is not None:
            raise ConfigError(
                f"URL prefix {prefix.text!r} is registered twice (same as {earlier.text!r}); "
                "each prefix can belong to one app only"
            )
        self._seen[prefix.key()] = prefix
        self._registrations.append((prefix, target))
        bucket = self._buckets.setdefault((prefix.scheme, prefix.port, prefix.host_kind), [])
        bucket.append((prefix, target))
        # Longest path first, so the first match in a bucket is the best one.
        bucket.sort(key=lambda entry: len(entry[0].segments), reverse=True)

    def __iter__(self) -> Iterator[tuple[UrlPrefix, Target]]:
        return iter(self._registrations)

    def __len__(self) -> int:
        return len(self._registrations)

    def match(
        self, scheme: str, host: str, port: int, path: str, local_ip: str | None = None
    ) -> PrefixMatch[Target] | None:
        """The registration that takes this request, or None (HTTP.sys would answer 404).

        ``host`` is the ``Host`` header value as received (a port in it is ignored: the local
        ``port`` the connection arrived on is what counts); ``local_ip`` is the local address
        of the connection, which IP-bound prefixes need (without it they never match); ``path``
        is the decoded request path.
        """
        request_host = _ascii_or_raw(host_from_header(host))
        request_ip = _normal_ip(local_ip)
        for kind in HostKind:
            bucket = self._buckets.get((scheme.lower(), port, kind))
            if not bucket:
                continue
            for prefix, target in bucket:
                if kind is HostKind.EXPLICIT and _ascii_host(prefix.host) != request_host:
                    continue
                if kind is HostKind.IP_BOUND and prefix.host != request_ip:
                    continue
                found = _match_path(prefix, path)
                if found is not None:
                    return PrefixMatch(prefix, target, found, path[len(found) :])
        return None


def _ascii_or_raw(host: str) -> str:
    try:
        return _ascii_host(host)
    except UnicodeError:
        return host


def match_path_base(path: str, base: str) -> str | None:
    """The start of ``path`` that is the path base ``base`` ("/api"; "" for none), in the
    path's own spelling, or None when ``path`` does not lie under it.

    HTTP.sys and ASP.NET Core's ``UsePathBase`` compare caselessly and on segment boundaries:
    ``/api`` takes ``/api``, ``/API/x`` and ``/api/`` but not ``/apix``. Both the prefix table
    and the engine's ``root_path`` use this, so the two agree on every request. An exact match
    costs one comparison; only a differently cased path pays for lowering."""
    size = len(base)
    if len(path) > size and path[size] != "/":
        return None
    head = path[:size]
    if head == base or (len(head) == size and head.lower() == base.lower()):
        return head
    return None


def _match_path(prefix: UrlPrefix, path: str) -> str | None:
    """The path base when ``path`` lies under ``prefix``'s path, else None."""
    if not prefix.segments:
        return ""
    return match_path_base(path, prefix.path_base)
