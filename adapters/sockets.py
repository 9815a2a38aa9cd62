"""Listening sockets for every socket-based adapter: bind what the endpoints say, report what
was really bound (port 0 resolved), and clean up unix socket files."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from dataclasses import dataclass, field

from tiercel.core.addresses import Endpoint, format_address
from tiercel.core.connection import EndpointSettings
from tiercel.core.errors import TiercelError

BACKLOG = 2048


class BindError(TiercelError, OSError):
    """A listen address could not be bound; the message says why and what to do."""


@dataclass
class Listener:
    sock: socket.socket
    url: str  # the address actually bound, e.g. http://127.0.0.1:43121
    unix_path: str | None = None
    endpoint: Endpoint | None = None  # what the user asked for
    # The engine's per-endpoint settings (protocols, TLS); the host sets and may replace them
    # (certificate reload), and each new connection reads the current value.
    settings: EndpointSettings = field(default_factory=EndpointSettings)

    def close(self) -> None:
        self.sock.close()
        if self.unix_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unix_path)


def _explain(endpoint: Endpoint, where: str, exc: OSError) -> BindError:
    if exc.errno == errno.EADDRINUSE:
        hint = "address already in use; stop the other program or choose another port with --urls"
    elif exc.errno == errno.EACCES:
        hint = "permission denied; ports below 1024 need privileges, or choose another port"
    elif exc.errno == errno.EADDRNOTAVAIL:
        hint = "this machine has no such address; use 0.0.0.0 or one of its addresses"
    else:
        hint = exc.strerror or str(exc)
    return BindError(f"cannot listen on {where} (from {endpoint.url}): {hint}")


def _tcp(endpoint: Endpoint, host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "[::]" means every interface, IPv4 included (dual-stack), as in Kestrel.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _unix(endpoint: Endpoint) -> Listener:
    path = endpoint.unix_path
    assert path is not None
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise BindError(f"cannot listen on {endpoint.url}: {path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale file left by a process that died (Kestrel issue 14134)
        else:
            raise BindError(
                f"cannot listen on {endpoint.url}: another process is serving on {path}"
            )
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise _explain(endpoint, path, exc) from None
    return Listener(sock, f"unix:{path}", unix_path=path, endpoint=endpoint)


def bind_endpoints(endpoints: list[Endpoint]) -> list[Listener]:
    """Bind every endpoint or none: on any failure, what was bound is closed again."""
    listeners: list[Listener] = []
    try:
        for endpoint in endpoints:
            if endpoint.kind == "unix":
                listeners.append(_unix(endpoint))
                continue
            hosts = endpoint.bind_hosts()
            for host in hosts:
                try:
                    sock = _tcp(endpoint, host, endpoint.port)
                except OSError as exc:
                    if (
                        endpoint.kind == "localhost"
                        and host == "::1"
                        and exc.errno
                        in (
                            errno.EADDRNOTAVAIL,
                            errno.EAFNOSUPPORT,
                        )
                    ):
                        continue  # no IPv6 loopback here; 127.0.0.1 is enough
                    if (
                        endpoint.kind == "any"
                        and host == "::"
                        and exc.errno
                        in (
                            errno.EAFNOSUPPORT,
                            errno.EADDRNOTAVAIL,
                        )
                    ):
                        sock = _tcp(endpoint, "0.0.0.0", endpoint.port)
                    else:
                        raise _explain(
                            endpoint, format_address(endpoint.scheme, host, endpoint.port), exc
                        ) from None
                bound_host, bound_port = sock.getsockname()[:2]
                url = format_address(endpoint.scheme, bound_host, bound_port)
                listeners.append(Listener(sock, url, endpoint=endpoint))
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners
