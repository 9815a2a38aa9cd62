"""The ``tiercel`` command."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

from tiercel.core.addresses import DEFAULT_URLS
from tiercel.core.config import DataRate, EngineConfig, Limits
from tiercel.core.errors import ConfigError
from tiercel.core.forwarded import ForwardedHeaders, ForwardedOptions, parse_networks
from tiercel.core.http2 import Http2Limits
from tiercel.core.proxy_protocol import ProxyProtocolSettings

from . import logs
from .options import ADAPTERS, INTERFACES, LIFESPAN_MODES, LOOPS, ServerOptions
from .tls import CertificateFiles, TlsOptions

EXAMPLES = """\
examples:
  tiercel                                   serve the built-in welcome app on http://localhost:5000
  tiercel myproject.main:app                serve an ASGI or WSGI app (Flask, Django, ...)
  tiercel myproject.wsgi:app --adapter threads --threads 16
                                            a WSGI app on blocking sockets and 16 threads
  tiercel myproject.main:create_app --factory
  tiercel app:app --urls "http://0.0.0.0:8080;unix:/run/app.sock"
  TIERCEL_URLS=http://[::]:0 tiercel app:app   any free port on every interface
  tiercel app:app --max-request-body-size 1000000 --keep-alive-timeout 30
  tiercel app:app --urls https://0.0.0.0:8443 --certfile cert.pem --keyfile key.pem
                                            HTTPS with HTTP/2 (ALPN); SIGHUP reloads the files

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
        help=f"';'-separated listen URLs (env TIERCEL_URLS; default {DEFAULT_URLS})",
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
        "are closed) or optional (direct clients are served too)",
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
    logging_group = parser.add_argument_group("logging")
    logging_group.add_argument("--log-level", choices=logs.LEVELS, default="info")
    logging_group.add_argument("--no-access-log", action="store_true")
    logging_group.add_argument("--no-server-header", action="store_true")
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
        http2=http2,
        interface=args.interface,
        protocols=args.protocols,
        tls=tls,
        urls=args.urls or os.environ.get("TIERCEL_URLS") or DEFAULT_URLS,
        adapter=args.adapter,
        loop=args.loop,
        engine=engine,
        shutdown_timeout=args.shutdown_timeout,
        access_log=not args.no_access_log,
        lifespan=args.lifespan,
    )


def _proxy_protocol_settings(args: argparse.Namespace) -> ProxyProtocolSettings | None:
    if args.proxy_protocol == "off":
        if args.proxy_trusted is not None:
            raise ConfigError("--proxy-trusted needs --proxy-protocol required|optional")
        return None
    extra: dict[str, Any] = {}
    if args.proxy_trusted is not None:
        extra["trusted"] = tuple(n.strip() for n in args.proxy_trusted.split(",") if n.strip())
    return ProxyProtocolSettings(required=args.proxy_protocol == "required", **extra)


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


def _explicit_flags(argv: list[str]) -> set[str]:
    return {a[2:].split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    args._explicit = _explicit_flags(argv)
    logs.configure(args.log_level)
    if args.threads:
        os.environ["TIERCEL_THREADS"] = str(args.threads)  # read by the adapters

    from tiercel.adapters.sockets import BindError

    from .hosting import Server, uvloop_factory
    from .lifespan import LifespanFailed
    from .loader import AppLoadError, load_app

    try:
        options = options_from_args(args)
        if args.app:
            app = load_app(args.app, factory=args.factory)
            app_name = args.app
        else:
            if args.factory:
                raise ConfigError("--factory needs an APP")
            from .welcome import app

            app_name = "the built-in welcome app"
        loop_name = "uvloop" if uvloop_factory(options.loop) else "asyncio"
        server = Server(app, options=options)
    except (ConfigError, AppLoadError) as exc:
        print(f"tiercel: error: {exc}", file=sys.stderr)
        return 2

    if options.adapter == "asyncio":
        runtime = f"asyncio adapter, {loop_name} loop"
    elif options.adapter == "threads":
        runtime = f"threads adapter, {server._impl.threads} worker threads"
    else:
        runtime = f"{options.adapter} adapter"

    def announce(addresses: list[str]) -> None:
        logs.error_log.info(
            "tiercel %s serving %s (%s, %s)",
            _version(),
            app_name,
            server.interface.upper(),
            runtime,
        )
        for address in addresses:
            logs.error_log.info("listening on %s", address)

    try:
        server.run(on_started=announce)
    except ConfigError as exc:  # found at start-up, e.g. a certificate file that won't load
        print(f"tiercel: error: {exc}", file=sys.stderr)
        return 2
    except (BindError, LifespanFailed) as exc:
        print(f"tiercel: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    logs.error_log.info("stopped")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
