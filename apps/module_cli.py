"""``tiercel module [OPTIONS] -- COMMAND [ARGS...]``: the out-of-process host's command.

The front takes every option of ``tiercel`` that is about serving (addresses, TLS, limits,
forwarded headers, logging) and serves a ``ModuleProxy``; the module's own options follow the
``<aspNetCore>`` attributes of web.config.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Mapping
from dataclasses import replace

from tiercel.core.errors import ConfigError
from tiercel.core.forwarded import DEFAULT_KNOWN_NETWORKS, ForwardedHeaders, ForwardedOptions

from . import logs
from .cli import _count, _explicit_flags, _seconds, build_parser, options_from_args
from .options import ServerOptions
from .workers import report_startup_error

MODULE_EXAMPLES = """\
examples:
  tiercel module --urls http://0.0.0.0:8080 -- tiercel myapp:app
  tiercel module --path-base /shop --stdout-log logs/app -- python -m tiercel shop:app
  tiercel module --command "tiercel myapp:app --adapter threads" --processes 2

The app process gets TIERCEL_PORT (a free loopback port), TIERCEL_TOKEN (the pairing token) and
TIERCEL_PATH_BASE. `tiercel APP` started with them listens on 127.0.0.1:TIERCEL_PORT only,
refuses requests without the token (400) and believes the module's X-Forwarded-For/-Proto
(and -Prefix: the path base the module's front is under, put in front of TIERCEL_PATH_BASE).
"""

# Options of `tiercel` that make no sense for the front (it serves the proxy, not an app).
_APP_ONLY = ("factory", "interface", "threads", "lifespan", "root_path")


def _whole(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(text)


def build_module_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    parser.prog = "tiercel module"
    parser.usage = "tiercel module [OPTIONS] -- COMMAND [ARGS...]"
    parser.description = (
        "Out-of-process hosting: serve the public addresses and forward every request to an "
        "app process that this command starts on the first request and restarts after a crash."
    )
    parser.epilog = MODULE_EXAMPLES
    group = parser.add_argument_group("the app process (out-of-process module)")
    group.add_argument(
        "--command",
        metavar="COMMAND_LINE",
        help="the app's command as one string (split like a shell would); or give it after --",
    )
    group.add_argument(
        "--path-base",
        default="",
        help="path base the app is mounted at, passed as TIERCEL_PATH_BASE (e.g. /shop)",
    )
    group.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the app (overrides the module's own); repeatable",
    )
    group.add_argument("--working-directory", metavar="DIR", help="the app's working directory")
    group.add_argument(
        "--startup-time-limit",
        type=_seconds,
        default=120.0,
        metavar="SECONDS",
        help="how long the app may take to listen before it is killed (default 120)",
    )
    group.add_argument(
        "--shutdown-time-limit",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long the app gets to stop after SIGTERM before it is killed (default 10)",
    )
    group.add_argument(
        "--rapid-fails-per-minute",
        type=_whole,
        default=10,
        metavar="N",
        help="after more crashes than this within a minute, answer 502 for the rest of the "
        "minute instead of restarting (default 10)",
    )
    group.add_argument(
        "--request-timeout",
        type=_seconds,
        default=120.0,
        metavar="SECONDS",
        help="502 when the app stays silent this long during a request (default 120)",
    )
    group.add_argument(
        "--stdout-log",
        metavar="PATH",
        help="write the app's stdout and stderr to PATH_<yyyymmddHHMMSS>_<pid>.log "
        "(default: they go to this command's)",
    )
    group.add_argument(
        "--processes",
        type=_count,
        default=1,
        metavar="N",
        help="app processes, used round-robin (default 1)",
    )
    return parser


def module_main(argv: list[str]) -> int:
    """Run ``tiercel module``; ``argv`` is what follows the word ``module``."""
    if "--" in argv:
        split = argv.index("--")
        front_argv, command = argv[:split], argv[split + 1 :]
    else:
        front_argv, command = argv, []
    parser = build_module_parser()
    args = parser.parse_args(front_argv)
    args._explicit = _explicit_flags(front_argv)
    logs.configure(args.log_level)

    from tiercel.adapters.sockets import BindError

    from .hosting import Server
    from .lifespan import LifespanFailed
    from .module import ModuleOptions, ModuleProxy

    try:
        if args.app:
            raise ConfigError(
                f"tiercel module takes the app's command, not an APP: "
                f"tiercel module -- tiercel {args.app}"
            )
        if args.adapter != "asyncio":
            raise ConfigError(
                f"tiercel module runs on the asyncio adapter (got --adapter {args.adapter}); "
                "give --adapter to the app's command after -- instead"
            )
        for name in _APP_ONLY:
            if name in args._explicit:
                raise ConfigError(
                    f"--{name.replace('_', '-')} belongs to the app's command "
                    "(after --), not to the module"
                )
        if args.command and command:
            raise ConfigError("give the app's command either with --command or after --, not both")
        if args.command:
            try:
                command = shlex.split(args.command)
            except ValueError as exc:
                raise ConfigError(f"--command: {exc}") from None
        if not command:
            raise ConfigError(
                "no app command: write it after --, e.g. tiercel module -- tiercel myapp:app"
            )
        env = {}
        for item in args.env:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise ConfigError(f"--env {item!r}: write NAME=VALUE")
            env[name] = value
        module_options = ModuleOptions(
            command=tuple(command),
            env=env,
            path_base=args.path_base,
            working_directory=args.working_directory,
            startup_time_limit=args.startup_time_limit,
            shutdown_time_limit=args.shutdown_time_limit,
            rapid_fails_per_minute=args.rapid_fails_per_minute,
            request_timeout=args.request_timeout,
            stdout_log_file=args.stdout_log,
            processes=args.processes,
        )
        args.lifespan = "on"  # the lifespan shutdown is what stops the app processes
        options = options_from_args(args)
        proxy = ModuleProxy(options=module_options)
        server = Server(proxy, options=options)
    except ConfigError as exc:
        return report_startup_error(None, exc, 2)

    def announce(addresses: list[str]) -> None:
        logs.error_log.info(
            "tiercel module forwarding to the app process started by: %s", shlex.join(command)
        )
        for address in addresses:
            logs.error_log.info("listening on %s", address)

    try:
        server.run(on_started=announce)
    except ConfigError as exc:
        return report_startup_error(None, exc, 2)
    except (BindError, LifespanFailed) as exc:
        return report_startup_error(None, exc, 1)
    except KeyboardInterrupt:
        return 130
    finally:
        proxy.kill_now()  # only does something when the lifespan shutdown could not run
    logs.error_log.info("stopped")
    return 0


# -- the app side: `tiercel APP` started by the module ----------------------------------------


def apply_module_environment(
    options: ServerOptions, environ: Mapping[str, str]
) -> tuple[ServerOptions, str | None]:
    """When ``tiercel module`` started this process (TIERCEL_PORT and TIERCEL_TOKEN are set),
    the options it must run with, and a line saying so; otherwise ``options`` unchanged.

    As in ASP.NET Core's IIS integration: listen on 127.0.0.1:TIERCEL_PORT only (whatever the
    URLs said), use TIERCEL_PATH_BASE as the path base, believe X-Forwarded-For/-Proto from
    loopback (and X-Forwarded-Prefix: the path base the module's front is itself under, which
    goes in front of TIERCEL_PATH_BASE), refuse requests without the pairing token, and leave
    the body size limit to the module (the front enforces its own)."""
    port_text, token = environ.get("TIERCEL_PORT"), environ.get("TIERCEL_TOKEN")
    if port_text is None and token is None:
        return options, None
    if not port_text or not token:
        missing = "TIERCEL_TOKEN" if port_text else "TIERCEL_PORT"
        raise ConfigError(
            f"{missing} is not set but the other module variable is; both come from "
            "tiercel module (unset both to run the app on its own)"
        )
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"TIERCEL_PORT={port_text!r} is not a port number (1-65535)")
    path_base = environ.get("TIERCEL_PATH_BASE", "")
    engine = options.engine
    previous = engine.forwarded
    forwarded = ForwardedOptions(
        headers=ForwardedHeaders.X_FORWARDED_FOR
        | ForwardedHeaders.X_FORWARDED_PROTO
        | ForwardedHeaders.X_FORWARDED_PREFIX,
        known_networks=DEFAULT_KNOWN_NETWORKS,
        forward_limit=1,
        allowed_hosts=previous.allowed_hosts if previous is not None else (),
    )
    try:
        engine = replace(
            engine,
            pairing_token=token,
            root_path=path_base or engine.root_path,
            forwarded=forwarded,
            limits=replace(engine.limits, max_request_body_size=None),
        )
    except ConfigError as exc:
        raise ConfigError(f"TIERCEL_TOKEN / TIERCEL_PATH_BASE: {exc}") from None
    urls = f"http://127.0.0.1:{int(port_text)}"
    note = (
        f"started by tiercel module: listening on {urls} only (other URLs are ignored), "
        f"path base {engine.root_path or '(none)'}, pairing token required"
    )
    return replace(options, urls=urls, endpoints=(), engine=engine), note
