"""Kestrel-style listen URLs: ``http://localhost:5000;http://0.0.0.0:8080;unix:/run/app.sock``.

Parsing only; binding is the adapters' job. Host rules follow Kestrel: ``localhost`` means both
loopbacks, ``0.0.0.0`` and ``[::]`` mean every interface, and any other name (``*``, ``+``,
``example.com``) also means every interface.

Sockets made by someone else (Kestrel's ``ListenHandle``) have their own forms: ``fd://3`` is an
already listening socket inherited as descriptor 3, ``systemd://`` every socket systemd passed
(socket activation) and ``systemd://NAME`` those with that ``FileDescriptorName=``. Both serve
plain HTTP unless ``?tls`` follows. ``unix:/run/app.sock?mode=0660`` sets the socket file's mode.

``?proxy=required|optional|off`` on any of these (not on ``queue:``) turns the PROXY protocol on
or off for that endpoint alone, overriding ``--proxy-protocol``: ``http://0.0.0.0:8080?proxy=required``.

``queue:/run/tiercel/api.queue`` is a request delegation queue (core/delegation.py): a
SOCK_SEQPACKET unix socket on which front servers hand over connections (``?mode=`` as unix:).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from .errors import ConfigError

DEFAULT_URLS = "http://localhost:5000"


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str  # as the user wrote it
    scheme: str  # "http", "https" or "unix"
    host: str | None  # None for unix sockets
    port: int
    kind: str  # "localhost", "any", "ip", "unix", "fd", "systemd", "queue"
    unix_path: str | None = None
    unix_mode: int | None = None  # unix:/path?mode=0660: the socket file's permission bits
    fd: int | None = None  # fd://N: the inherited descriptor
    systemd_name: str | None = None  # systemd://NAME; "" means every socket systemd passed
    proxy: str | None = None  # ?proxy=required|optional|off; None follows --proxy-protocol

    def bind_hosts(self) -> list[str]:
        if self.kind == "localhost":
            return ["127.0.0.1", "::1"]
        if self.kind == "any":
            return ["0.0.0.0"] if self.host == "0.0.0.0" else ["::"]
        return [self.host or ""]


def _bad(url: str, why: str) -> ConfigError:
    return ConfigError(f"invalid listen URL {url!r}: {why}")


def parse_url(url: str) -> Endpoint:
    text = url.strip()
    if text.startswith("queue:"):
        return _parse_queue(url, text[6:])
    # ?proxy= is the one option every other kind takes; the kind's own parser sees the rest.
    text, proxy = _take_proxy_option(url, text)
    endpoint = _parse_url_without_proxy(url, text)
    return endpoint if proxy is None else replace(endpoint, proxy=proxy)


def _parse_url_without_proxy(url: str, text: str) -> Endpoint:
    if text.startswith("unix:"):
        return _parse_unix(url, text[5:])
    if text.lower().startswith("fd:"):
        return _parse_fd(url, text[3:])
    if text.lower().startswith("systemd:"):
        return _parse_systemd(url, text[8:])
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise _bad(url, str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _bad(url, "the scheme must be http://, https://, unix: or queue:")
    if parts.query:
        option = parts.query.partition("&")[0].partition("=")[0]
        raise _bad(url, f"unknown option {option!r}; an {scheme}:// URL takes only ?proxy=")
    if parts.path not in ("", "/") or parts.fragment:
        raise _bad(url, "a listen URL cannot have a path; use --root-path for a path base")
    netloc = parts.netloc
    if "@" in netloc:
        raise _bad(url, "a listen URL cannot carry a user name or password")
    if not netloc or netloc.startswith(":"):
        raise _bad(url, "no host; write e.g. http://localhost:5000 or http://0.0.0.0:5000")
    if netloc.startswith("["):
        close = netloc.find("]")
        if close == -1:
            raise _bad(url, "unclosed '[' in an IPv6 address")
        host, rest = netloc[1:close], netloc[close + 1 :]
    else:
        host, colon, port_text = netloc.rpartition(":")
        if not colon:
            host, port_text = port_text, ""
        rest = colon + port_text
    if rest and not rest.startswith(":"):
        raise _bad(url, "unexpected text after the host")
    port_text = rest[1:]
    if rest == ":":
        raise _bad(url, "empty port after ':'; give a number, or 0 for any free port")
    if port_text:
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise _bad(url, f"port {port_text!r} is not a number from 0 to 65535")
        port = int(port_text)
    else:
        port = 443 if scheme == "https" else 80
    lowered = host.lower()
    if lowered == "localhost":
        if port == 0:
            raise _bad(
                url,
                "localhost with port 0 would bind two different ports; "
                "use http://127.0.0.1:0 or http://[::1]:0",
            )
        return Endpoint(url, scheme, "localhost", port, "localhost")
    if not host:
        raise _bad(url, "no host; write e.g. http://localhost:5000")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if ":" in host or netloc.startswith("["):
            raise _bad(url, f"{host!r} is not an IPv6 address") from None
        # Kestrel treats any other host name (including * and +) as "every interface".
        return Endpoint(url, scheme, None, port, "any")
    if address.is_unspecified:
        return Endpoint(url, scheme, str(address), port, "any")
    return Endpoint(url, scheme, str(address), port, "ip")


# -- ?proxy=: the PROXY protocol on one endpoint ---------------------------------------------------

PROXY_MODES = ("required", "optional", "off")


def _take_proxy_option(url: str, text: str) -> tuple[str, str | None]:
    """``http://h:80?proxy=required`` -> (``http://h:80``, "required"); other options stay."""
    body, question, query = text.partition("?")
    if not question:
        return text, None
    kept: list[str] = []
    proxy: str | None = None
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if key != "proxy":
            kept.append(item)
            continue
        if proxy is not None:
            raise _bad(url, "option 'proxy' is given twice")
        if value not in PROXY_MODES:
            raise _bad(
                url,
                f"?proxy={value} is not a PROXY protocol mode; write ?proxy=required, "
                "?proxy=optional or ?proxy=off",
            )
        proxy = value
    return (body + "?" + "&".join(kept) if kept else body), proxy


# -- sockets from outside: fd://N, systemd://[NAME], unix:/path?mode=NNNN ------------------------

# systemd's own rule for FileDescriptorName=: printable ASCII without ':' (the list separator).
_MAX_FD_NAME = 255


def _split_options(url: str, text: str, allowed: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """``body?key=value&flag`` -> (body, {key: value, flag: ""}); unknown or repeated keys fail."""
    body, question, query = text.partition("?")
    options: dict[str, str] = {}
    if not question:
        return body, options
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if key not in allowed:
            known = ", ".join(f"?{name}" for name in (*allowed, "proxy="))
            raise _bad(url, f"unknown option {key!r}; this kind of URL takes {known}")
        if key in options:
            raise _bad(url, f"option {key!r} is given twice")
        options[key] = value
    return body, options


def _scheme_for(url: str, options: dict[str, str]) -> str:
    if "tls" not in options:
        return "http"
    if options["tls"]:
        raise _bad(url, "write ?tls (with no value) to serve HTTPS on this socket")
    return "https"


def _parse_unix(url: str, rest: str) -> Endpoint:
    path, options = _split_options(url, rest, ("mode",))
    if path.startswith("//"):
        path = path[2:]
    if not path.startswith("/"):
        raise _bad(url, "a unix socket needs an absolute path, e.g. unix:/run/tiercel.sock")
    mode = None
    if "mode" in options:
        mode = _socket_mode(options["mode"])
        if mode is None:
            raise _bad(
                url,
                f"mode {options['mode']!r} is not an octal permission such as 0660 or 0600",
            )
    return Endpoint(url, "unix", None, 0, "unix", unix_path=path, unix_mode=mode)


def _parse_queue(url: str, rest: str) -> Endpoint:
    """``queue:/path[?mode=0660]``: where front servers hand this server their connections."""
    path, _, query = rest.partition("?")
    if any(item.partition("=")[0] == "proxy" for item in query.split("&")):
        raise _bad(
            url,
            "a queue takes no ?proxy=: the front server reads the PROXY header and hands over "
            "the client's address",
        )
    if not path.startswith("/") or not path.strip("/"):
        raise _bad(url, "a queue needs an absolute path, e.g. queue:/run/tiercel/api.queue")
    unix = _parse_unix(url, rest)
    return Endpoint(
        url, "http", None, 0, "queue", unix_path=unix.unix_path, unix_mode=unix.unix_mode
    )


def _socket_mode(text: str) -> int | None:
    """``"0660"`` or ``"660"`` -> 0o660; None when it is not three octal digits (after a 0)."""
    digits = text[1:] if len(text) == 4 and text.startswith("0") else text
    if len(digits) != 3 or any(c not in "01234567" for c in digits):
        return None
    return int(digits, 8)


def _parse_fd(url: str, rest: str) -> Endpoint:
    body, options = _split_options(url, rest, ("tls",))
    number = body[2:] if body.startswith("//") else body
    if not number.isdigit() or len(number) > 9:
        raise _bad(url, "write the descriptor number, e.g. fd://3")
    scheme = _scheme_for(url, options)
    return Endpoint(url, scheme, None, 0, "fd", fd=int(number))


def _parse_systemd(url: str, rest: str) -> Endpoint:
    body, options = _split_options(url, rest, ("tls",))
    name = body[2:] if body.startswith("//") else body
    if len(name) > _MAX_FD_NAME or any(not " " < c < "\x7f" or c == ":" for c in name):
        raise _bad(
            url,
            "a socket name is what FileDescriptorName= says: printable ASCII without ':' "
            "or spaces, e.g. systemd://web (or systemd:// for every socket)",
        )
    scheme = _scheme_for(url, options)
    return Endpoint(url, scheme, None, 0, "systemd", systemd_name=name)


def parse_urls(text: str) -> list[Endpoint]:
    urls = [u for u in (part.strip() for part in text.split(";")) if u]
    if not urls:
        raise ConfigError("no listen URLs given; e.g. --urls http://localhost:5000")
    return [parse_url(u) for u in urls]


def format_address(scheme: str, host: str, port: int) -> str:
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"
