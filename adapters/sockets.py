"""Listening sockets for every socket-based adapter: bind what the endpoints say, report what
was really bound (port 0 resolved), and clean up unix socket files.

Sockets made by someone else (``fd://N``, systemd socket activation) are adopted, not bound:
they are checked to be listening stream sockets, and on exit their descriptor is closed but a
unix socket file behind one is left alone, since its owner made it."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import sys
from collections.abc import Iterator
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
    # Where the socket came from when that is worth saying at start-up: "inherited fd 5",
    # "fd 3 from systemd, name 'web'", "mode 0660".
    origin: str = ""
    inherited_fd: int | None = None  # fd://N and systemd: a descriptor we adopted

    @property
    def is_queue(self) -> bool:
        """A request delegation queue (``queue:``): it takes handed-over connections."""
        return self.endpoint is not None and self.endpoint.kind == "queue"

    def describe(self) -> str:
        """The URL, where the socket came from and whether it reads a PROXY header:
        ``http://127.0.0.1:80 (inherited fd 5, PROXY protocol required)``."""
        notes = [note for note in (self.origin, self._proxy_note()) if note]
        return f"{self.url} ({', '.join(notes)})" if notes else self.url

    def _proxy_note(self) -> str:
        proxy = self.settings.proxy_protocol
        if proxy is None:
            return ""
        return f"PROXY protocol {'required' if proxy.required else 'optional'}"

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


def _tcp(
    endpoint: Endpoint, host: str, port: int, *, reuse_port: bool = False, listen: bool = True
) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # tiercel --workers N --reuse-port (see bind_endpoints)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # "[::]" means every interface, IPv4 included (dual-stack), as in Kestrel.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
        sock.bind((host, port))
        if listen:
            sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _unix(endpoint: Endpoint) -> Listener:
    path = endpoint.unix_path
    assert path is not None
    # A delegation queue (queue:) carries handoff messages with their socket, one per packet.
    kind = socket.SOCK_SEQPACKET if endpoint.kind == "queue" else socket.SOCK_STREAM
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise BindError(f"cannot listen on {endpoint.url}: {path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, kind)
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
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise _explain(endpoint, path, exc) from None
    try:
        _set_unix_mode(endpoint, path)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise _explain(endpoint, path, exc) from None
    origin = "" if endpoint.unix_mode is None else f"mode {endpoint.unix_mode:04o}"
    url = f"queue:{path}" if endpoint.kind == "queue" else f"unix:{path}"
    return Listener(sock, url, unix_path=path, endpoint=endpoint, origin=origin)


def _set_unix_mode(endpoint: Endpoint, path: str) -> None:
    # Between bind and listen: a client cannot connect before the mode is right.
    if endpoint.unix_mode is not None:
        os.chmod(path, endpoint.unix_mode)


def bind_endpoints(
    endpoints: list[Endpoint], *, reserve_reuse_port: bool = False
) -> list[Listener]:
    """Bind every endpoint or none: on any failure, what was bound is closed again.

    ``reserve_reuse_port`` (the supervisor of ``--workers N --reuse-port``): TCP addresses are
    bound with SO_REUSEPORT but not listened on, which holds the port (port 0 resolved) without
    joining the kernel's group of listeners that new connections are spread over."""
    handed_down = take_handed_down_listeners()
    if handed_down is not None:  # a worker under ``tiercel --workers``: its supervisor bound them
        return handed_down
    own_reuse_port = bind_reuse_port_listeners()
    if own_reuse_port is not None:  # a worker under ``--reuse-port``: its own sockets
        return own_reuse_port
    tcp_options = {"reuse_port": True, "listen": False} if reserve_reuse_port else {}
    listeners: list[Listener] = []
    try:
        activated: list[ActivatedSocket] | None = None  # taken from the environment once
        for endpoint in endpoints:
            if endpoint.kind in ("unix", "queue"):
                listeners.append(_unix(endpoint))
                continue
            if endpoint.kind in ("fd", "systemd"):
                if endpoint.kind == "systemd" and activated is None:
                    activated = take_systemd_sockets(endpoint)
                listeners.extend(_adopt_all(endpoint, activated or [], listeners))
                continue
            hosts = endpoint.bind_hosts()
            for host in hosts:
                try:
                    sock = _tcp(endpoint, host, endpoint.port, **tcp_options)
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
                        sock = _tcp(endpoint, "0.0.0.0", endpoint.port, **tcp_options)
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


# -- sockets from outside: fd://N and systemd socket activation --------------------------------

SD_LISTEN_FDS_START = 3  # systemd passes its sockets as descriptors 3, 4, ...
_SYSTEMD_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


@dataclass(frozen=True)
class ActivatedSocket:
    fd: int
    name: str  # FileDescriptorName= (systemd-socket-activate --fdname), "unknown" if unnamed

    @property
    def is_queue(self) -> bool:
        """A request delegation queue (``queue:``): it takes handed-over connections."""
        return self.endpoint is not None and self.endpoint.kind == "queue"

    def describe(self) -> str:
        named = f", name {self.name!r}" if self.name != "unknown" else ""
        return f"fd {self.fd} from systemd{named}"


def systemd_socket_count() -> int:
    """How many sockets systemd passed to this very process; 0 when none (or not to us)."""
    pid = os.environ.get("LISTEN_PID", "")
    count = os.environ.get("LISTEN_FDS", "")
    if pid != str(os.getpid()) or not count.isdigit():
        return 0
    return int(count)


def take_systemd_sockets(endpoint: Endpoint) -> list[ActivatedSocket]:
    """The sockets systemd passed, read from LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES, which are then
    removed from the environment (as ``sd_listen_fds(1)`` does) so that child processes never
    take them for theirs."""
    environ = {name: os.environ.get(name) for name in _SYSTEMD_VARIABLES}
    for name in _SYSTEMD_VARIABLES:
        os.environ.pop(name, None)

    def refuse(why: str) -> BindError:
        return BindError(f"cannot listen on {endpoint.url}: {why}")

    pid_text, count_text, names_text = environ.values()
    if pid_text is None or count_text is None:
        raise refuse(
            "systemd passed no sockets (LISTEN_PID/LISTEN_FDS are not set); start tiercel from "
            "a systemd .socket unit or systemd-socket-activate, or listen on an http:// URL"
        )
    if not pid_text.isdigit() or not count_text.isdigit():
        raise refuse(f"LISTEN_PID={pid_text!r} and LISTEN_FDS={count_text!r} must be numbers")
    if int(pid_text) != os.getpid():
        raise refuse(
            f"LISTEN_PID is {pid_text} but tiercel runs as pid {os.getpid()}: the sockets were "
            "meant for another process (a wrapper script must exec tiercel, not run it)"
        )
    count = int(count_text)
    if count == 0:
        raise refuse("systemd passed no sockets (LISTEN_FDS=0)")
    names = names_text.split(":") if names_text else ["unknown"] * count
    if len(names) != count:
        raise refuse(f"LISTEN_FDNAMES has {len(names)} names for LISTEN_FDS={count} sockets")
    return [ActivatedSocket(SD_LISTEN_FDS_START + i, name) for i, name in enumerate(names)]


def _adopt_all(
    endpoint: Endpoint, activated: list[ActivatedSocket], taken: list[Listener]
) -> Iterator[Listener]:
    """The listeners an ``fd://N`` or ``systemd://[NAME]`` endpoint stands for."""
    if endpoint.kind == "fd":
        assert endpoint.fd is not None
        chosen = [(endpoint.fd, f"inherited fd {endpoint.fd}")]
    else:
        wanted = endpoint.systemd_name
        matches = [a for a in activated if not wanted or a.name == wanted]
        if not matches:
            names = ", ".join(sorted({repr(a.name) for a in activated}))
            raise BindError(
                f"cannot listen on {endpoint.url}: systemd passed no socket named {wanted!r} "
                f"(it passed {names}); set FileDescriptorName= in the .socket unit, or use "
                "systemd:// for all of them"
            )
        chosen = [(a.fd, a.describe()) for a in matches]
    for fd, origin in chosen:
        if any(listener.inherited_fd == fd for listener in taken):
            raise BindError(
                f"cannot listen on {endpoint.url}: fd {fd} is already used by another listen "
                "URL; name each socket once"
            )
        yield _adopt(endpoint, fd, origin)


def _file_kind(mode: int) -> str:
    kinds = {
        stat.S_ISREG: "a regular file",
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a pipe",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
    }
    return next((kind for test, kind in kinds.items() if test(mode)), "not a socket")


def _adopt(endpoint: Endpoint, fd: int, origin: str) -> Listener:
    """A Listener for a listening stream socket someone else made and passed as ``fd``."""

    def refuse(why: str) -> BindError:
        return BindError(f"cannot listen on {endpoint.url}: {why}")

    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        raise refuse(
            f"fd {fd} is not open in this process; the parent must pass it "
            "(e.g. subprocess pass_fds) or the number is wrong"
        ) from None
    if not stat.S_ISSOCK(mode):
        raise refuse(f"fd {fd} is {_file_kind(mode)}, not a socket")
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise refuse(f"fd {fd} is a socket tiercel cannot use: {exc.strerror or exc}") from None
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
            family = getattr(sock.family, "name", sock.family)
            raise refuse(f"fd {fd} is a {family} socket; tiercel serves TCP or unix sockets")
        wanted = socket.SOCK_SEQPACKET if endpoint.kind == "queue" else socket.SOCK_STREAM
        if sock.type != wanted:
            kind = getattr(sock.type, "name", sock.type)
            if endpoint.kind == "queue":
                raise refuse(f"fd {fd} is a {kind} socket; a queue is a SOCK_SEQPACKET socket")
            raise refuse(f"fd {fd} is a {kind} socket; HTTP needs a SOCK_STREAM socket")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise refuse(f"fd {fd} is a socket that is not listening; call listen() on it first")
        local = sock.getsockname()
        if sock.family == socket.AF_UNIX:
            if endpoint.scheme == "https":
                raise refuse(f"fd {fd} is a unix socket; ?tls is for TCP sockets only")
            path = local.decode("utf-8", "replace") if isinstance(local, bytes) else local
            url = f"unix:{path.replace(chr(0), '@')}" if path else f"unix:(unnamed fd {fd})"
            if endpoint.kind == "queue":
                url = "queue:" + url[5:]
        else:
            url = format_address(endpoint.scheme, local[0], local[1])
        os.set_inheritable(fd, False)  # as sd_listen_fds does: not for our own children
        sock.setblocking(False)
    except BaseException:
        sock.detach()  # refused: leave the descriptor as it was found
        raise
    # unix_path stays None: the socket file is its creator's to remove, not ours.
    return Listener(sock, url, endpoint=endpoint, origin=origin, inherited_fd=fd)


# -- listeners a supervisor hands down to its workers (tiercel --workers, apps/workers.py) -------

# A connection accepted just as a graceful stop begins gets this long for its first bytes before
# it is closed as idle: its request is usually on the way already, and on a socket shared with
# other worker processes closing it would fail a request that they could serve.
FIRST_REQUEST_GRACE = 1.0

HANDED_DOWN_ENV = "TIERCEL_WORKER_LISTENERS"  # JSON [[fd, listen URL], ...], set by the supervisor


def take_handed_down_listeners() -> list[Listener] | None:
    """The sockets the supervisor bound and passed to this worker, or None when it is not one.
    The variable is removed so that the app's child processes never take it for theirs."""
    text = os.environ.pop(HANDED_DOWN_ENV, None)
    if text is None:
        return None
    from tiercel.core.addresses import parse_url

    listeners: list[Listener] = []
    try:
        for fd, url in json.loads(text):
            listeners.append(_adopt(parse_url(url), int(fd), "shared with the other workers"))
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners


# -- each worker's own SO_REUSEPORT sockets (tiercel --workers N --reuse-port) ------------------

REUSE_PORT_ENV = "TIERCEL_WORKER_REUSE_PORT"  # JSON [[listen URL, host, port], ...]
REUSE_PORT_KINDS = ("localhost", "any", "ip")  # TCP addresses; the others cannot be bound again
_REUSE_PORT_PLATFORMS = ("linux", "freebsd", "openbsd", "netbsd", "dragonfly")


def reuse_port_supported() -> bool:
    """SO_REUSEPORT that spreads connections over the listeners: Linux 3.9+ and the BSDs
    (macOS has the option, but there the last socket bound takes every connection)."""
    return hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith(_REUSE_PORT_PLATFORMS)


def reuse_port_addresses(reserved: list[Listener]) -> str:
    """What the supervisor tells each worker to bind: every reserved address, port resolved."""
    addresses = []
    for listener in reserved:
        assert listener.endpoint is not None
        host, port = listener.sock.getsockname()[:2]
        addresses.append([listener.endpoint.url, host, port])
    return json.dumps(addresses)


def bind_reuse_port_listeners() -> list[Listener] | None:
    """This worker's own listening sockets, bound with SO_REUSEPORT to the addresses its
    supervisor reserved; None when it is not such a worker. The variable is removed so that the
    app's child processes never take it for theirs."""
    text = os.environ.pop(REUSE_PORT_ENV, None)
    if text is None:
        return None
    from tiercel.core.addresses import parse_url

    listeners: list[Listener] = []
    try:
        for url, host, port in json.loads(text):
            endpoint = parse_url(url)
            try:
                sock = _tcp(endpoint, host, int(port), reuse_port=True)
            except OSError as exc:
                raise _explain(endpoint, format_address(endpoint.scheme, host, port), exc) from None
            bound = format_address(endpoint.scheme, host, int(port))
            listeners.append(Listener(sock, bound, endpoint=endpoint, origin="SO_REUSEPORT"))
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def take_reuse_port_queue(listeners: list[Listener]) -> list[tuple[Listener, socket.socket]]:
    """The connections waiting in this worker's own SO_REUSEPORT sockets, accepted just before an
    adapter closes them at a graceful stop: closing would reset them (unless
    net.ipv4.tcp_migrate_req moves them to another worker), while accepted they are served
    like any connection that arrives as the stop begins. Shared sockets keep their queue."""
    taken: list[tuple[Listener, socket.socket]] = []
    for listener in listeners:
        if listener.origin != "SO_REUSEPORT":
            continue
        while True:
            try:
                sock, _ = listener.sock.accept()
            except OSError:  # BlockingIOError: the queue is empty
                break
            taken.append((listener, sock))
    return taken
