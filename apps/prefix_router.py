"""Port sharing by URL prefix: one front serving several apps, HTTP.sys style.

A TOML file lists the apps, each with one or more HTTP.sys URL prefixes::

    [[app]]
    name = "api"
    prefixes = ["http://+:8080/api/"]
    app = "myproject.api:app"

``PrefixRouter`` is the ASGI app the server runs. For each request it asks the ``PrefixTable``
(core/url_prefixes.py) which registration takes (scheme, Host, local port, path), then calls
that app with ``root_path`` extended by the matched path base; ``path`` stays the full path, as
the ASGI spec asks. An out-of-process app (``command``) is the exception: its ``ModuleProxy``
keeps the front's own ``root_path``, forwards the path below it with that base as
X-Forwarded-Prefix, and the app process finds its prefix's path base (TIERCEL_PATH_BASE) in
the path itself, caselessly; the app sees the same ``root_path`` an in-process app would.
No match is a plain-text 404. Lifespan is fanned out: startup runs each ASGI
app's startup in file order (a failure stops the server and names the app, after shutting down
the ones already started), shutdown runs them in reverse. WSGI apps are run through
``WsgiInAsgi`` and have no lifespan.

The listen addresses come from the prefixes unless ``--urls`` is given: one socket per (scheme,
port), on every interface when any prefix there has a host name or a wildcard (``+``, ``*``),
else on the IP addresses the prefixes name.
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import anyio
from tiercel.core.addresses import Endpoint
from tiercel.core.errors import ConfigError
from tiercel.core.url_prefixes import HostKind, PrefixTable, UrlPrefix, parse_url_prefix

from .lifespan import Lifespan, LifespanFailed
from .loader import AppLoadError, load_app, resolve_interface
from .module import ModuleOptions, ModuleProxy
from .wsgi_in_asgi import WsgiInAsgi

Message = dict[str, Any]

_APP_KEYS = {"name", "prefixes", "app", "interface", "factory"}
# An out-of-process entry takes ModuleOptions' fields; path_base comes from its prefixes.
_COMMAND_KEYS = {"name", "prefixes"} | {f.name for f in fields(ModuleOptions)} - {"path_base"}
_INTERFACES = ("auto", "asgi", "wsgi")
NOT_FOUND_BODY = b"404 Not Found: no app is registered for this URL.\n"


@dataclass(frozen=True)
class AppEntry:
    """One ``[[app]]`` table of the config file, checked."""

    name: str
    prefixes: tuple[UrlPrefix, ...]
    spec: str | None  # module:attribute of an in-process app; None for a command
    interface: str = "auto"
    factory: bool = False
    # An out-of-process app: ModuleProxy's settings (command, env, limits...), else None.
    module: ModuleOptions | None = None


@dataclass
class MountedApp:
    """An entry with its app loaded: what requests matched to its prefixes are given to."""

    entry: AppEntry
    app: Any  # an ASGI app (WSGI apps are wrapped)
    interface: str  # what the user's app speaks: "asgi" or "wsgi"
    lifespan: Lifespan | None = None
    state: dict[str, Any] = field(default_factory=dict)


def load_config(path: str | Path) -> list[AppEntry]:
    """Read and check the apps file; every problem is one ConfigError line naming the fix."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--apps {str(path)!r}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"--apps {str(path)!r}: cannot read it ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--apps {str(path)!r}: not valid TOML: {exc}") from None
    return parse_config(data, str(path))


def parse_config(data: dict[str, Any], source: str = "apps file") -> list[AppEntry]:
    unknown = set(data) - {"app"}
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}; "
            "list apps as [[app]] tables"
        )
    tables = data.get("app")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(
            f"{source}: no apps; add at least one [[app]] table with prefixes and app"
        )
    entries: list[AppEntry] = []
    names: set[str] = set()
    for number, table in enumerate(tables, start=1):
        entry = _parse_entry(table, f"{source}: app #{number}")
        if entry.name in names:
            raise ConfigError(f"{source}: two apps are named {entry.name!r}; names must differ")
        names.add(entry.name)
        entries.append(entry)
    build_table(entries)  # duplicate prefixes are a configuration error, found here
    return entries


def _parse_entry(table: Any, where: str) -> AppEntry:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a [[app]] table")
    if "command" in table and "app" in table:
        raise ConfigError(
            f"{where}: give either app = 'module:attribute' (in-process) or command = [...] "
            "(out-of-process), not both"
        )
    allowed = _COMMAND_KEYS if "command" in table else _APP_KEYS
    unknown = set(table) - allowed
    if unknown:
        kind = "an out-of-process app (command)" if "command" in table else "an app"
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"{kind} takes {', '.join(sorted(allowed))}"
        )
    if "command" in table:
        return _parse_command_entry(table, where)
    spec = table.get("app")
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"{where}: needs app = 'module:attribute' (an ASGI or WSGI app)")
    name, where = _name(table, spec, where)
    prefixes = _parse_prefixes(table, where)
    interface = table.get("interface", "auto")
    if interface not in _INTERFACES:
        raise ConfigError(f"{where}: interface must be one of {', '.join(_INTERFACES)}")
    factory = table.get("factory", False)
    if not isinstance(factory, bool):
        raise ConfigError(f"{where}: factory must be true or false")
    return AppEntry(name, prefixes, spec, interface, factory)


def _parse_command_entry(table: dict[str, Any], where: str) -> AppEntry:
    command = table["command"]
    if (
        not isinstance(command, list)
        or not command
        or not all(isinstance(word, str) and word for word in command)
    ):
        raise ConfigError(f"{where}: command must be a list of words, e.g. ['tiercel', 'app:app']")
    name, where = _name(table, command[0], where)
    prefixes = _parse_prefixes(table, where)
    # The process is told one path base (TIERCEL_PATH_BASE), so its prefixes share one path.
    bases = {prefix.path_base.lower() for prefix in prefixes}
    if len(bases) > 1:
        raise ConfigError(
            f"{where}: an out-of-process app gets one path base, but its prefixes have "
            f"different paths ({', '.join(sorted(bases))}); give each path its own [[app]]"
        )
    settings = {key: value for key, value in table.items() if key not in ("name", "prefixes")}
    settings["command"] = tuple(command)
    try:
        options = ModuleOptions(path_base=prefixes[0].path_base, **settings)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return AppEntry(name, prefixes, None, "asgi", False, options)


def _name(table: dict[str, Any], default: str, where: str) -> tuple[str, str]:
    name = table.get("name", default)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: name must be a non-empty string")
    return name, f"{where} ({name!r})"


def _parse_prefixes(table: dict[str, Any], where: str) -> tuple[UrlPrefix, ...]:
    raw_prefixes = table.get("prefixes")
    if isinstance(raw_prefixes, str):
        raw_prefixes = [raw_prefixes]
    if not isinstance(raw_prefixes, list) or not raw_prefixes:
        raise ConfigError(
            f'{where}: needs prefixes = ["http://+:80/path/", ...] (HTTP.sys URL prefixes)'
        )
    prefixes: list[UrlPrefix] = []
    for raw in raw_prefixes:
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: each prefix must be a string (got {raw!r})")
        try:
            prefixes.append(parse_url_prefix(raw))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return tuple(prefixes)


def build_table(entries: list[AppEntry]) -> PrefixTable[AppEntry]:
    table: PrefixTable[AppEntry] = PrefixTable()
    for entry in entries:
        for prefix in entry.prefixes:
            try:
                table.add(prefix, entry)
            except ConfigError as exc:
                raise ConfigError(f"app {entry.name!r}: {exc}") from None
    return table


def listen_urls(entries: list[AppEntry]) -> str:
    """The ``--urls`` value that serves every prefix: one socket per (scheme, port)."""
    groups: dict[tuple[str, int], set[str]] = {}
    for entry in entries:
        for prefix in entry.prefixes:
            hosts = groups.setdefault((prefix.scheme, prefix.port), set())
            if prefix.host_kind is HostKind.IP_BOUND:
                hosts.add(f"[{prefix.host}]" if ":" in prefix.host else prefix.host)
            else:
                hosts.add("*")  # a name or a wildcard: requests may come on any interface
    every = _every_interface()
    urls: list[str] = []
    for (scheme, port), hosts in sorted(groups.items()):
        for host in [every] if "*" in hosts else sorted(hosts):
            urls.append(f"{scheme}://{host}:{port}")
    return ";".join(urls)


def _every_interface() -> str:
    """``[::]`` (dual-stack, IPv4 too) where the machine has IPv6, else ``0.0.0.0``."""
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
    except OSError:
        return "0.0.0.0"
    return "[::]"


def check_listeners(entries: list[AppEntry], endpoints: tuple[Endpoint, ...]) -> None:
    """Every prefix must be reachable through some listen address given with ``--urls``."""
    if any(e.kind not in ("localhost", "any", "ip") for e in endpoints):
        return  # unix sockets or inherited sockets: their ports are not known here
    served = {(e.scheme, e.port) for e in endpoints}
    for entry in entries:
        for prefix in entry.prefixes:
            if (prefix.scheme, prefix.port) not in served:
                raise ConfigError(
                    f"app {entry.name!r}: prefix {prefix.text!r} is on {prefix.scheme} port "
                    f"{prefix.port} but no --urls address listens there; add "
                    f"{prefix.scheme}://*:{prefix.port} to --urls, or leave --urls out to "
                    "bind from the prefixes"
                )


def mount(entries: list[AppEntry]) -> list[MountedApp]:
    """Load every app (imports run now, so a broken app stops start-up with its name)."""
    mounted: list[MountedApp] = []
    for entry in entries:
        if entry.module is not None:
            mounted.append(MountedApp(entry, ModuleProxy(options=entry.module), "module"))
            continue
        assert entry.spec is not None
        try:
            app = load_app(entry.spec, factory=entry.factory)
        except AppLoadError as exc:
            raise AppLoadError(f"app {entry.name!r}: {exc}") from None
        interface = resolve_interface(app, entry.interface)
        mounted.append(
            MountedApp(entry, WsgiInAsgi(app) if interface == "wsgi" else app, interface)
        )
    return mounted


class PrefixRouter:
    """The front's ASGI app: routes each request to the app whose prefix matches best."""

    def __init__(self, apps: list[MountedApp]) -> None:
        self.apps = apps
        self.table: PrefixTable[MountedApp] = PrefixTable(
            (prefix, mounted) for mounted in apps for prefix in mounted.entry.prefixes
        )

    @classmethod
    def from_file(cls, path: str | Path) -> PrefixRouter:
        return cls(mount(load_config(path)))

    async def __call__(self, scope: Message, receive: Callable[[], Any], send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] not in ("http", "websocket"):
            raise RuntimeError(f"the prefix router cannot route a {scope['type']!r} scope")
        root_path: str = scope.get("root_path", "")
        path: str = scope["path"]
        # The front may itself sit under a path base (--root-path, X-Forwarded-Prefix): the
        # prefixes are matched against what follows it.
        relative = path[len(root_path) :] if root_path and path.startswith(root_path) else path
        scheme: str = scope.get("scheme", "http")
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        host = _header(scope, b"host")
        local_ip, port = _local_address(scope, scheme, host)
        found = self.table.match(scheme, host, port, relative, local_ip)
        if found is None:
            await _not_found(scope, send)
            return
        mounted = found.target
        child = dict(scope)
        # An out-of-process app finds its own path base (TIERCEL_PATH_BASE) in the path, as
        # an ANCM app applies ASPNETCORE_APPL_PATH: its proxy is given only the front's base,
        # which reaches the app as X-Forwarded-Prefix. In-process apps get the whole base.
        if mounted.entry.module is None:
            child["root_path"] = root_path + found.path_base
        if mounted.lifespan is not None:
            child["state"] = mounted.state.copy()
        else:
            child.pop("state", None)
        await mounted.app(child, receive, send)

    async def _lifespan(self, scope: Message, receive: Callable[[], Any], send: Any) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        extensions = scope.get("extensions") or {}
        started: list[MountedApp] = []
        failure: str | None = None
        async with anyio.create_task_group() as tasks:
            for mounted in self.apps:
                if mounted.interface == "wsgi":
                    continue
                lifespan = Lifespan(mounted.app, "auto", extensions)
                try:
                    await lifespan.startup(tasks.start_soon)
                except LifespanFailed as exc:
                    # The server says "the app's startup failed: " in front of this already.
                    reason = str(exc).removeprefix("the app's startup failed: ")
                    failure = f"app {mounted.entry.name!r}: {reason}"
                    break
                mounted.lifespan = lifespan
                mounted.state = lifespan.state
                started.append(mounted)
            if failure is not None:
                await _shutdown(started)
                tasks.cancel_scope.cancel()  # the failed app's lifespan task, if still running
            else:
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
                await _shutdown(started)
        if failure is not None:
            await send({"type": "lifespan.startup.failed", "message": failure})
            return
        await send({"type": "lifespan.shutdown.complete"})


async def _shutdown(started: list[MountedApp]) -> None:
    for mounted in reversed(started):
        assert mounted.lifespan is not None
        await mounted.lifespan.shutdown()


def _header(scope: Message, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def _local_address(scope: Message, scheme: str, host: str) -> tuple[str | None, int]:
    server = scope.get("server")
    if server and server[1] is not None:
        return str(server[0]), int(server[1])
    # A unix socket has no port: the Host header's port (or the scheme's) stands in.
    _, colon, port_text = host.rpartition(":")
    if colon and port_text.isdigit():
        return None, int(port_text)
    return None, 443 if scheme == "https" else 80


async def _not_found(scope: Message, send: Any) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(NOT_FOUND_BODY)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": NOT_FOUND_BODY})
