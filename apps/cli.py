"""The ``tiercel`` command."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn

from tiercel.core.addresses import DEFAULT_URLS
from tiercel.core.config import DataRate, EngineConfig, Limits
from tiercel.core.delegation import DelegationRules
from tiercel.core.errors import ConfigError
from tiercel.core.forwarded import ForwardedHeaders, ForwardedOptions, parse_networks
from tiercel.core.http2 import Http2Limits
from tiercel.core.proxy_protocol import ProxyProtocolSettings
from tiercel.core.response_cache import (
    DEFAULT_MAX_ENTRY_SIZE,
    ResponseCacheSettings,
    parse_size,
)

from . import launch_profiles, logs
from .options import ADAPTERS, INTERFACES, LIFESPAN_MODES, LOOPS, ServerOptions
from .tls import CertificateFiles, TlsOptions
from .workers import WorkerChannel, add_worker_arguments, report_startup_error, supervise_if_wanted

EXAMPLES = """\
examples:
  tiercel                                   serve the built-in welcome app on http://localhost:5000
  tiercel myproject.main:app                serve an ASGI or WSGI app (Flask, Django, ...)
  tiercel myproject.wsgi:app --adapter threads --threads 16
                                            a WSGI app on blocking sockets and 16 threads
  tiercel myproject.main:create_app --factory
  tiercel app:app --urls "http://0.0.0.0:8080;unix:/run/app.sock"
  tiercel app:app --urls "fd://3;unix:/run/app.sock?mode=0660"
                                            an inherited socket, and a socket file for a group
  systemd-socket-activate -l 8080 --fdname=web tiercel app:app --urls systemd://web
  TIERCEL_URLS=http://[::]:0 tiercel app:app   any free port on every interface
  tiercel --launch-profile dev              settings from Properties/launchSettings.json
  tiercel app:app --max-request-body-size 1000000 --keep-alive-timeout 30
  tiercel app:app --workers 4 --max-requests 10000 --max-requests-jitter 1000
                                            4 processes on the same sockets; SIGHUP restarts them
  tiercel app:app --urls https://0.0.0.0:8443 --certfile cert.pem --keyfile key.pem
                                            HTTPS with HTTP/2 (ALPN); SIGHUP reloads the files
  tiercel --apps apps.toml                  several apps sharing ports by HTTP.sys URL prefix

Limits and timeouts default to Kestrel's (body 30,000,000 bytes, headers 32 KiB, keep-alive 130 s,
request headers 30 s, minimum body and response data rates 240 bytes/s after 5 s).
"""


def _version() -> str:
    try:
        return version("tiercel")
    except PackageNotFoundError:
        return "unknown"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"tiercel: error: {message} (see tiercel --help)\n")


def _size(text: str) -> int | None:
    if text.lower() == "none":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of bytes (or 'none')")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be 0 or more")
    return value


def _rate(text: str) -> DataRate | None:
    if text.lower() == "none":
        return None
    try:
        return DataRate(float(text))
    except (ValueError, ConfigError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rate in bytes per second above 0 (or 'none')"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tiercel",
        description="Serve an ASGI or WSGI app with tiercel.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "app",
        nargs="?",
        metavar="APP",
        help="module:attribute of an ASGI or WSGI app (default: welcome)",
    )
    parser.add_argument("--factory", action="store_true", help="APP is a factory to call")
    parser.add_argument(
        "--urls",
        default=None,
        help=f"';'-separated listen URLs (env TIERCEL_URLS; default {DEFAULT_URLS}, or "
        "systemd:// under socket activation): http://HOST:PORT, https://...,"
        " unix:/PATH[?mode=0660], fd://N[?tls] (an inherited listening socket),"
        " systemd://[NAME][?tls]",
    )
    parser.add_argument("--adapter", choices=ADAPTERS, default="asyncio")
    parser.add_argument(
        "--interface",
        choices=INTERFACES,
        default="auto",
        help="how to call APP; auto tells an ASGI app (async) from a WSGI one",
    )
    parser.add_argument(
        "--loop", choices=LOOPS, default="auto", help="auto picks uvloop if present"
    )
    parser.add_argument(
        "--threads",
        type=_count,
        metavar="N",
        help="worker threads for WSGI apps, on every adapter "
        "(env TIERCEL_THREADS; default max(8, 2 x CPUs + 2))",
    )
    parser.add_argument("--lifespan", choices=LIFESPAN_MODES, default="auto")
    parser.add_argument("--root-path", default="", help="path base the app is mounted at")
    parser.add_argument(
        "--protocols",
        choices=("http1", "http2", "http1andhttp2"),
        type=str.lower,
        default="http1andhttp2",
        help="HTTP versions per endpoint; on cleartext both means h1 plus prior-knowledge h2c",
    )
    parser.add_argument(
        "--http1",
        choices=("fast", "h11"),
        default="fast",
        help="HTTP/1.1 codec: tiercel's fast one (default) or h11, the reference",
    )
    http2 = parser.add_argument_group("HTTP/2")
    http2.add_argument("--http2-max-streams", type=_count, metavar="N", help="default 100")
    http2.add_argument(
        "--http2-keep-alive-ping",
        type=_seconds,
        metavar="SECONDS",
        help="PING a silent connection after this long (off by default; 20 s to answer)",
    )
    proxy = parser.add_argument_group("behind a reverse proxy")
    proxy.add_argument(
        "--forwarded-headers",
        nargs="?",
        const="x-forwarded",
        choices=("x-forwarded", "forwarded"),
        help="believe the headers a trusted proxy writes: X-Forwarded-For/-Proto/-Host/-Prefix "
        "(the default, what nginx and HAProxy send) or RFC 7239 Forwarded. Enable only the "
        "kind your proxy writes: a client could forge the other kind",
    )
    proxy.add_argument(
        "--proxy-protocol",
        choices=("off", "required", "optional"),
        default="off",
        help="PROXY protocol v1/v2 on every endpoint: required (connections without a header "
        "are closed) or optional (direct clients are served too); one listen URL can say "
        "otherwise with ?proxy=required|optional|off, e.g. http://0.0.0.0:8080?proxy=required",
    )
    proxy.add_argument(
        "--proxy-trusted",
        metavar="CIDR[,CIDR...]",
        help="who may send a PROXY header (default 127.0.0.0/8,::1)",
    )
    proxy.add_argument(
        "--forwarded-trusted",
        metavar="CIDR[,CIDR...]",
        help="proxies whose forwarded headers count (default 127.0.0.0/8,::1)",
    )
    proxy.add_argument(
        "--forward-limit", metavar="N|none", help="proxy hops to process (default 1)"
    )
    proxy.add_argument(
        "--allow-alternate-schemes",
        action="store_true",
        help="accept an HTTP/2 :scheme that differs from the connection's and pass it to the "
        "app (HAProxy's 'proto h2' sends https over cleartext); Kestrel's AllowAlternateSchemes",
    )
    proxy.add_argument(
        "--allowed-hosts",
        metavar="HOST[,HOST...]",
        help="answer 400 to other Host values; *.example.com matches subdomains",
    )
    tls = parser.add_argument_group("TLS (for https:// URLs)")
    tls.add_argument("--certfile", help="PEM certificate (chain) for https:// URLs")
    tls.add_argument("--keyfile", help="PEM private key, if not inside --certfile")
    tls.add_argument("--keyfile-password", help="password of an encrypted key")
    tls.add_argument(
        "--sni",
        action="append",
        default=[],
        metavar="HOST=CERT[,KEY]",
        help="a certificate for one host name (exact or *.example.com); repeatable",
    )
    tls.add_argument(
        "--client-certificate-mode", choices=("none", "allow", "require"), default="none"
    )
    tls.add_argument("--ca-certs", help="CA bundle that client certificates must chain to")
    tls.add_argument("--handshake-timeout", type=_seconds, default=10.0, metavar="SECONDS")
    limits = parser.add_argument_group("limits and timeouts")
    limits.add_argument("--max-request-body-size", type=_size, metavar="BYTES")
    limits.add_argument("--max-request-line-size", type=_count, metavar="BYTES")
    limits.add_argument("--max-request-headers-size", type=_count, metavar="BYTES")
    limits.add_argument("--max-request-header-count", type=_count, metavar="N")
    limits.add_argument("--max-connections", type=_size, metavar="N")
    limits.add_argument("--keep-alive-timeout", type=_seconds, metavar="SECONDS")
    limits.add_argument("--request-headers-timeout", type=_seconds, metavar="SECONDS")
    limits.add_argument("--min-request-body-rate", type=_rate, metavar="BYTES_PER_SECOND")
    limits.add_argument("--min-response-rate", type=_rate, metavar="BYTES_PER_SECOND")
    limits.add_argument("--shutdown-timeout", type=_seconds, default=30.0, metavar="SECONDS")
    _add_response_cache_arguments(parser)
    _add_prefix_routing_arguments(parser)
    _add_delegation_arguments(parser)
    logging_group = parser.add_argument_group("logging")
    logging_group.add_argument("--log-level", choices=logs.LEVELS, default="info")
    logging_group.add_argument(
        "--rejection-log-level",
        choices=logs.REJECTION_LOG_LEVELS,
        default="info",
        help="level of the line logged for each request refused before the app saw it "
        "(bad framing, limits, timeouts, host filtering, PROXY header); default info",
    )
    logging_group.add_argument("--no-access-log", action="store_true")
    logging_group.add_argument("--no-server-header", action="store_true")
    launch_profiles.add_launch_profile_arguments(parser)
    add_worker_arguments(parser)
    _add_httpsys_arguments(parser)
    parser.add_argument("--version", action="version", version=f"tiercel {_version()}")
    return parser


_LIMIT_FLAGS = {
    "max_request_body_size": "max_request_body_size",
    "max_request_line_size": "max_request_line_size",
    "max_request_headers_size": "max_request_headers_total_size",
    "max_request_header_count": "max_request_header_count",
    "max_connections": "max_concurrent_connections",
    "keep_alive_timeout": "keep_alive_timeout",
    "request_headers_timeout": "request_headers_timeout",
    "min_request_body_rate": "min_request_body_data_rate",
    "min_response_rate": "min_response_data_rate",
}
_NONE_ALLOWED = {"max_request_body_size", "max_connections"}
_RATES = {"min_request_body_rate", "min_response_rate"}


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    overrides: dict[str, Any] = {}
    explicit = set(getattr(args, "_explicit", ()))
    for flag, limit in _LIMIT_FLAGS.items():
        value = getattr(args, flag)
        if value is not None or (flag in explicit and (flag in _NONE_ALLOWED or flag in _RATES)):
            overrides[limit] = value
    limits = Limits().with_overrides(**overrides)
    engine = EngineConfig(
        limits=limits,
        server_header=None if args.no_server_header else "tiercel",
        root_path=args.root_path,
        http1_codec=args.http1,
        forwarded=_forwarded_options(args),
        allow_alternate_schemes=args.allow_alternate_schemes,
        response_cache=_response_cache_settings(args),
        delegation=_delegation_rules(args),
    )
    tls = None
    if args.certfile:
        sni = {}
        for item in args.sni:
            host, sep, files = item.partition("=")
            if not sep or not host or not files:
                raise ConfigError(f"--sni {item!r}: write HOST=CERT or HOST=CERT,KEY")
            cert, _, key = files.partition(",")
            sni[host] = CertificateFiles(cert, key or None, args.keyfile_password)
        tls = TlsOptions(
            default=CertificateFiles(args.certfile, args.keyfile, args.keyfile_password),
            sni=sni,
            client_certificate_mode=args.client_certificate_mode,
            ca_certs=args.ca_certs,
            handshake_timeout=args.handshake_timeout,
        )
    elif args.sni or args.keyfile:
        raise ConfigError("--keyfile and --sni need --certfile (the default certificate)")
    http2 = Http2Limits()
    if args.http2_max_streams is not None or args.http2_keep_alive_ping is not None:
        http2 = replace(
            http2,
            max_concurrent_streams=args.http2_max_streams or http2.max_concurrent_streams,
            keep_alive_ping_delay=args.http2_keep_alive_ping,
        )
    return ServerOptions(
        proxy_protocol=_proxy_protocol_settings(args),
        proxy_trusted=_proxy_trusted_networks(args),
        http2=http2,
        interface=args.interface,
        protocols=args.protocols,
        tls=tls,
        urls=_listen_urls_from_args(args),
        adapter=args.adapter,
        loop=args.loop,
        engine=engine,
        shutdown_timeout=args.shutdown_timeout,
        access_log=not args.no_access_log,
        rejection_log_level=args.rejection_log_level,
        lifespan=args.lifespan,
        httpsys=_httpsys_options(args),
    )


# -- the HTTP.sys adapter's options (HttpSysOptions; docs/httpsys.md) ----------------------------


def _add_httpsys_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("HTTP.sys (--adapter httpsys, Windows; see docs/httpsys.md)")
    group.add_argument("--httpsys-max-connections", type=int, metavar="N", help="-1 = unlimited")
    group.add_argument(
        "--httpsys-queue-limit", type=int, metavar="N", help="request queue length (1000)"
    )
    group.add_argument("--httpsys-queue-name", metavar="NAME", help="a named request queue")
    group.add_argument(
        "--httpsys-queue-mode", choices=("create", "attach", "createorattach"), type=str.lower
    )
    group.add_argument(
        "--httpsys-503-verbosity", choices=("basic", "limited", "full"), type=str.lower
    )
    group.add_argument(
        "--httpsys-auth", metavar="SCHEMES", help="e.g. negotiate,ntlm (also basic, kerberos)"
    )
    group.add_argument("--httpsys-no-anonymous", action="store_true", help="answer 401 instead")
    group.add_argument(
        "--httpsys-no-response-cache", action="store_true", help="no kernel response cache"
    )
    group.add_argument(
        "--httpsys-max-accepts", type=int, metavar="N", help="outstanding receives (5 x CPUs)"
    )


def _httpsys_options(args: argparse.Namespace) -> Any:
    from tiercel.adapters.httpsys.options import HttpSysOptions

    given = sorted(
        f"--{name.replace('_', '-')}"
        for name, value in vars(args).items()
        if name.startswith("httpsys_") and value not in (None, False)
    )
    if args.adapter != "httpsys":
        if given:
            raise ConfigError(f"{given[0]} needs --adapter httpsys")
        return None
    return HttpSysOptions(
        max_connections=args.httpsys_max_connections,
        request_queue_limit=args.httpsys_queue_limit,
        request_queue_name=args.httpsys_queue_name,
        request_queue_mode=args.httpsys_queue_mode or "create",
        http503_verbosity=args.httpsys_503_verbosity or "basic",
        authentication_schemes=tuple((args.httpsys_auth or "").split(",")),
        allow_anonymous=not args.httpsys_no_anonymous,
        enable_response_caching=not args.httpsys_no_response_cache,
        max_accepts=args.httpsys_max_accepts,
    )


def _proxy_trusted_networks(args: argparse.Namespace) -> tuple[str, ...] | None:
    if args.proxy_trusted is None:
        return None
    return tuple(n.strip() for n in args.proxy_trusted.split(",") if n.strip())


def _proxy_protocol_settings(args: argparse.Namespace) -> ProxyProtocolSettings | None:
    """The default for every endpoint; a listen URL's ?proxy= overrides it (ServerOptions
    checks --proxy-trusted, which may also serve only such URLs)."""
    if args.proxy_protocol == "off":
        return None
    extra: dict[str, Any] = {}
    trusted = _proxy_trusted_networks(args)
    if trusted is not None:
        extra["trusted"] = trusted
    return ProxyProtocolSettings(required=args.proxy_protocol == "required", **extra)


# -- port sharing by URL prefix (--apps FILE) ------------------------------------------------


def _add_prefix_routing_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("port sharing by URL prefix (HTTP.sys style)")
    group.add_argument(
        "--apps",
        metavar="FILE",
        help="serve several apps on shared ports, each under its HTTP.sys URL prefixes "
        "(http://+:80/api/), listed in a TOML file; without --urls the ports come from the "
        "prefixes",
    )


def _listen_urls_from_args(args: argparse.Namespace) -> str:
    """--urls, else TIERCEL_URLS, else the ports of --apps' prefixes, else the default."""
    return args.urls or os.environ.get("TIERCEL_URLS") or _urls_from_apps(args) or _default_urls()


def _urls_from_apps(args: argparse.Namespace) -> str | None:
    """With ``--apps`` and no ``--urls``: listen where the prefixes say (one socket per port)."""
    apps_file = getattr(args, "apps", None)
    if not apps_file:
        return None
    from .prefix_router import listen_urls, load_config

    return listen_urls(load_config(apps_file))


def _prefix_router_from_args(
    args: argparse.Namespace, options: ServerOptions
) -> tuple[Any, str, ServerOptions]:
    from .prefix_router import PrefixRouter, check_listeners, load_config, mount

    if args.app or args.factory:
        raise ConfigError("give either APP or --apps FILE, not both")
    if os.environ.get("TIERCEL_TOKEN"):
        raise ConfigError(
            "--apps cannot run inside tiercel module (it listens on one loopback port); "
            "give the module one app, or run the --apps front itself"
        )
    entries = load_config(args.apps)
    if options.adapter != "asyncio" and any(entry.module is not None for entry in entries):
        raise ConfigError(
            "--apps: out-of-process apps (command = [...]) run on the asyncio adapter only; "
            "drop --adapter or use app = 'module:attribute'"
        )
    if args.urls or os.environ.get("TIERCEL_URLS"):
        check_listeners(entries, options.endpoints)
    router = PrefixRouter(mount(entries))
    names = ", ".join(entry.name for entry in entries)
    return router, f"{len(entries)} apps from {args.apps} ({names})", options


# -- request delegation (core/delegation.py) ------------------------------------------------------


def _add_delegation_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("request delegation (HTTP.sys queue transfer)")
    group.add_argument(
        "--delegate",
        action="append",
        default=[],
        metavar="PREFIX=QUEUE_PATH",
        help="hand connections whose first request is under PREFIX (/api/ or "
        "http://+:8080/api/) to the tiercel serving --urls queue:QUEUE_PATH; repeatable",
    )


def _delegation_rules(args: argparse.Namespace) -> DelegationRules | None:
    if not args.delegate:
        return None
    if args.adapter == "httpsys":
        raise ConfigError(
            "--delegate is for the socket adapters; HTTP.sys delegates with its own queues"
        )
    return DelegationRules.parse(args.delegate)


def _delegation_lines(options: ServerOptions) -> list[str]:
    rules = options.engine.delegation
    return [] if rules is None else rules.describe()


def _add_response_cache_arguments(parser: argparse.ArgumentParser) -> None:
    cache = parser.add_argument_group("response cache (HTTP.sys's kernel cache rules)")
    cache.add_argument(
        "--response-cache",
        metavar="SIZE",
        help="turn the response cache on with this much memory, e.g. 64MiB (default: off)",
    )
    cache.add_argument(
        "--response-cache-max-entry",
        metavar="SIZE",
        help=f"largest response body cached (default {DEFAULT_MAX_ENTRY_SIZE // 1024}KiB)",
    )


def _response_cache_settings(args: argparse.Namespace) -> ResponseCacheSettings | None:
    if args.response_cache is None:
        if args.response_cache_max_entry is not None:
            raise ConfigError("--response-cache-max-entry needs --response-cache SIZE")
        return None
    max_entry = args.response_cache_max_entry
    return ResponseCacheSettings(
        max_size=parse_size(args.response_cache),
        max_entry_size=DEFAULT_MAX_ENTRY_SIZE if max_entry is None else parse_size(max_entry),
    )


def _forwarded_options(args: argparse.Namespace) -> ForwardedOptions | None:
    if not args.forwarded_headers:
        for flag in ("forwarded_trusted", "forward_limit"):
            if getattr(args, flag) is not None:
                raise ConfigError(f"--{flag.replace('_', '-')} needs --forwarded-headers")
        if not args.allowed_hosts:
            return None
    extra: dict[str, Any] = {}
    if args.forwarded_trusted is not None:
        extra["known_networks"] = parse_networks(args.forwarded_trusted, "--forwarded-trusted")
    if args.forward_limit is not None:
        text = args.forward_limit.strip().lower()
        if text != "none" and not text.isdigit():
            raise ConfigError(f"--forward-limit: expected a number or 'none' (got {text!r})")
        extra["forward_limit"] = None if text == "none" else int(text)
    return ForwardedOptions(
        headers={
            None: ForwardedHeaders.NONE,
            "x-forwarded": ForwardedHeaders.X_FORWARDED_ALL,
            "forwarded": ForwardedHeaders.FORWARDED,
        }[args.forwarded_headers],
        allowed_hosts=tuple(h for h in (args.allowed_hosts or "").split(",") if h.strip()),
        **extra,
    )


def _default_urls() -> str:
    """``systemd://`` when systemd passed this process its sockets (socket activation)."""
    from tiercel.adapters.sockets import systemd_socket_count

    return "systemd://" if systemd_socket_count() else DEFAULT_URLS


def _warn_unused_systemd_sockets(options: ServerOptions) -> None:
    from tiercel.adapters.sockets import systemd_socket_count

    count = systemd_socket_count()
    if count and not any(e.kind in ("systemd", "fd") for e in options.endpoints):
        logs.error_log.warning(
            "systemd passed %d socket(s) that --urls does not use; add systemd:// to --urls",
            count,
        )


def _listening_lines(server: Any, addresses: list[str]) -> list[str]:
    """Each address, with where its socket came from (inherited fd, systemd, unix mode)."""
    listeners = getattr(server._impl, "listeners", None) or []
    if [listener.url for listener in listeners] != addresses:
        return addresses
    return [listener.describe() for listener in listeners]


def _explicit_flags(argv: list[str]) -> set[str]:
    return {a[2:].split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}


def _module_environment(options: ServerOptions) -> tuple[ServerOptions, str | None]:
    """Started by `tiercel module` (TIERCEL_PORT/TIERCEL_TOKEN set): its options; see
    apps/module_cli.py."""
    from .module_cli import apply_module_environment

    return apply_module_environment(options, os.environ)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["module"]:  # `tiercel module ...`: the out-of-process host
        from .module_cli import module_main

        return module_main(argv[1:])
    try:  # the launch profile's commandLineArgs come first, so explicit arguments win
        launch = launch_profiles.plan_launch(build_parser, argv, Path.cwd(), os.environ)
    except ConfigError as exc:
        print(f"tiercel: error: {exc}", file=sys.stderr)
        return 2
    args = launch.args
    args._explicit = _explicit_flags(launch.argv)
    logs.configure(args.log_level)
    exit_code = launch_profiles.apply_launch_plan(launch, logs.error_log.info)
    if exit_code is not None:  # an Executable profile's program ran instead
        return exit_code
    if args.threads:
        os.environ["TIERCEL_THREADS"] = str(args.threads)  # read by the adapters
    worker = WorkerChannel.from_environment()  # set when a supervisor started this process
    if worker is None:
        # --workers N, --max-requests; workers get the launch profile folded into their argv
        supervised_exit_code = supervise_if_wanted(args, launch.child_argv)
        if supervised_exit_code is not None:
            return supervised_exit_code

    from tiercel.adapters.sockets import BindError

    from .hosting import Server, uvloop_factory
    from .lifespan import LifespanFailed
    from .loader import AppLoadError, load_app

    try:
        options = options_from_args(args)
        options, module_note = _module_environment(options)
        if args.apps:
            app, app_name, options = _prefix_router_from_args(args, options)
        elif args.app:
            app = load_app(args.app, factory=args.factory)
            app_name = args.app
        else:
            if args.factory:
                raise ConfigError("--factory needs an APP")
            from .welcome import app

            app_name = "the built-in welcome app"
        loop_name = "uvloop" if uvloop_factory(options.loop) else "asyncio"
        server = Server(app, options=options)
        if worker is not None:
            worker.attach(server, args)
        _warn_unused_systemd_sockets(options)
    except (ConfigError, AppLoadError) as exc:
        return report_startup_error(worker, exc, 2)

    if options.adapter == "asyncio":
        runtime = f"asyncio adapter, {loop_name} loop"
    elif options.adapter == "threads":
        runtime = f"threads adapter, {server._impl.threads} worker threads"
    else:
        runtime = f"{options.adapter} adapter"

    def announce(addresses: list[str]) -> None:
        summary = f"tiercel {_version()} serving {app_name} ({server.interface.upper()}, {runtime})"
        if worker is not None:  # its supervisor prints this once for all workers
            worker.ready(summary)
            return
        logs.error_log.info("%s", summary)
        if module_note is not None:
            logs.error_log.info("%s", module_note)
        for line in _listening_lines(server, addresses):
            logs.error_log.info("listening on %s", line)
        for line in _delegation_lines(options):
            logs.error_log.info("delegating %s", line)

    try:
        server.run(on_started=announce)
    except ConfigError as exc:  # found at start-up, e.g. a certificate file that won't load
        return report_startup_error(worker, exc, 2)
    except (BindError, LifespanFailed) as exc:
        return report_startup_error(worker, exc, 1)
    except KeyboardInterrupt:
        return 130
    logs.error_log.info("stopped")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
