"""``tiercel module``'s front: an ASGI app that runs the real app in another process.

This is the out-of-process hosting model of the ASP.NET Core Module. ``ModuleProxy`` is an
ordinary ASGI app, so any tiercel front (the ``tiercel module`` command, or a prefix-routing
front next to in-process apps) can serve it.

Theory of operation
-------------------
Processes. The proxy owns ``processes`` slots (round-robin). A slot starts its app process on
the first request that reaches it: the user's command, with ``TIERCEL_PORT`` (a free loopback
port), ``TIERCEL_TOKEN`` (a random pairing token) and ``TIERCEL_PATH_BASE`` in its environment.
Requests that arrive while it starts wait for the same start. The start succeeds when the port
accepts a connection; it fails when the process exits first or does not listen within
``startup_time_limit`` (the process is then killed). A failed start, and any later exit that the
proxy did not ask for, counts as a crash; the next request starts a new process. After more than
``rapid_fails_per_minute`` crashes within a minute the proxy answers 502 without starting one
until the oldest of those crashes is a minute old. Every 502 page names its cause. On Linux
the app dies with the module even when the module is killed outright (see ``_LINUX_LAUNCHER``).

Stop (``aclose``, also run by the ASGI lifespan shutdown): each process is asked to stop
(SIGTERM; CTRL_BREAK on Windows), given ``shutdown_time_limit`` seconds, then killed.

Requests. Each slot keeps a small pool of idle keep-alive connections to its process. A request
is forwarded over HTTP/1.1 (``core/http1_client.py``) with the path as received (the app strips
its own path base, TIERCEL_PATH_BASE, itself), hop-by-hop headers removed both ways,
``X-Forwarded-For`` and ``X-Forwarded-Proto`` appended and the pairing token set. When the
front is itself under a path base (the scope's ``root_path``), the path below it goes, and the
base is sent as ``X-Forwarded-Prefix``, which the app puts in front of its own. The app's 1xx
responses other than 100 (103 Early Hints) are passed on to the client. The request body
streams as it arrives: with its Content-Length when the client sent one (or when it came in one
piece), chunked otherwise. The response body is read ahead of the client into a buffer of at most
``response_buffer_size`` bytes, so a response that fits is finished upstream, and the connection
back in the pool, while a slow client is still reading; a larger response streams through that
buffer without ever being held whole. A pooled connection that turns out to be closed is retried
once on a new connection when the request body has not been streamed yet.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import html
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import quote, unquote

from tiercel.core.asgi import INFORMATIONAL_EXTENSION
from tiercel.core.errors import ConfigError
from tiercel.core.http1_client import (
    LAST_CHUNK,
    Body,
    Informational,
    ResponseEnded,
    ResponseEvent,
    ResponseReader,
    ResponseStarted,
    UpstreamProtocolError,
    encode_chunk,
    serialize_request_head,
    strip_hop_by_hop,
)
from tiercel.core.pairing import TOKEN_HEADER

log = logging.getLogger("tiercel.error")

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Request headers the module sets itself, or that the front has already acted on. The app
# believes X-Forwarded-Prefix from the module, so a client's own must not get through.
_DROPPED_REQUEST_HEADERS = frozenset(
    {TOKEN_HEADER, b"expect", b"content-length", b"x-forwarded-prefix"}
)
# Characters a path segment may hold unescaped (RFC 3986 pchar), for X-Forwarded-Prefix.
_PATH_SAFE = "/-._~!$&'()*+,;=:@"
_READ_SIZE = 262_144
CRASH_WINDOW = 60.0
# Idle upstream connections are dropped well before the app's keep-alive timeout (130 s by
# default) would close them, so a request rarely meets a connection the app is closing.
IDLE_CONNECTION_LIFETIME = 60.0
# Methods that may be sent again when the app died before answering (RFC 9110 9.2.2).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


@dataclass(frozen=True)
class ModuleOptions:
    """What ``ModuleProxy`` needs. Names follow the ``<aspNetCore>`` attributes of web.config."""

    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)  # on top of the module's environment
    path_base: str = ""
    working_directory: str | None = None
    startup_time_limit: float = 120.0
    shutdown_time_limit: float = 10.0
    rapid_fails_per_minute: int = 10
    request_timeout: float = 120.0  # the longest the app may stay silent during one request
    stdout_log_file: str | None = None  # None: the app's stdout and stderr are the module's
    processes: int = 1
    max_idle_connections: int = 32  # per process
    response_buffer_size: int = 1_048_576

    def __post_init__(self) -> None:
        if (
            isinstance(self.command, str)
            or not self.command
            or not all(isinstance(part, str) and part for part in self.command)
        ):
            raise ConfigError(
                "the module needs the app's command as a list of words, "
                "e.g. ['tiercel', 'myapp:app']"
            )
        object.__setattr__(self, "command", tuple(self.command))
        base = self.path_base
        if base and (not base.startswith("/") or base.endswith("/")):
            raise ConfigError(
                f"path_base must start with '/' and not end with one (got {base!r}), e.g. '/api'"
            )
        _check_range("startup_time_limit", self.startup_time_limit, 0, 3600, zero=False)
        _check_range("shutdown_time_limit", self.shutdown_time_limit, 0, 600, zero=True)
        _check_range("rapid_fails_per_minute", self.rapid_fails_per_minute, 0, 100, zero=True)
        _check_range("request_timeout", self.request_timeout, 0, 1_296_000, zero=False)
        _check_range("processes", self.processes, 1, 100, zero=False)
        _check_range("max_idle_connections", self.max_idle_connections, 0, 10_000, zero=True)
        _check_range("response_buffer_size", self.response_buffer_size, 1, 1 << 30, zero=False)
        for name, value in self.env.items():
            if not isinstance(name, str) or not name or "=" in name or not isinstance(value, str):
                raise ConfigError(f"env: {name!r}={value!r} is not a NAME=VALUE pair of strings")


def _check_range(name: str, value: float, low: float, high: float, *, zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number (got {value!r})")
    if not (low <= value <= high) or (value == 0 and not zero):
        lowest = low if zero or low > 0 else "above 0"
        raise ConfigError(f"{name} must be from {lowest} to {high} (got {value})")


class BadGateway(Exception):
    """Why a request cannot reach the app; the text goes on the 502 page."""


class _ConnectFailed(BadGateway):
    """The app's port refused the connection (it may have just died)."""


class _NothingReceived(Exception):
    """The upstream connection failed before the first byte of a response."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


# On Linux the app's command runs through this launcher, so that the app dies with the module
# even when the module itself is SIGKILLed: it asks the kernel for SIGTERM when its parent dies
# (PR_SET_PDEATHSIG, kept across exec), exits if the module is already gone, then execs the
# command in its own process. Not a preexec_fn: that runs Python in the forked copy of a
# threaded process, where a lock held by another thread can deadlock it. The kernel signals
# when the *thread* that forked ends; that is the event loop's, which outlives the app
# processes. Why an exec failed goes to the pipe named second (closed by a successful exec).
_LINUX_LAUNCHER = """\
import os, signal, sys
parent, report = int(sys.argv[1]), int(sys.argv[2])
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
except (ImportError, OSError, AttributeError):
    pass
if os.getppid() != parent:
    os._exit(1)
os.set_inheritable(report, False)
try:
    os.execvp(sys.argv[3], sys.argv[3:])
except OSError as exc:
    os.write(report, (exc.strerror or str(exc)).encode())
    os._exit(127)
"""
_LAUNCHER_USABLE = sys.platform.startswith("linux") and bool(sys.executable)


def _launcher_argv(command: Sequence[str], report_write: int) -> list[str]:
    launcher = [sys.executable, "-I", "-S", "-c", _LINUX_LAUNCHER]
    return [*launcher, str(os.getpid()), str(report_write), *command]


def _launcher_failure(report: int | None) -> str:
    """What the launcher wrote about a command it could not run ("" if nothing); called once
    the process has exited, so the pipe holds all there is."""
    if report is None:
        return ""
    try:
        return os.read(report, 4096).decode("utf-8", "replace")
    except BlockingIOError:
        return ""


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


Upstream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class AppProcess:
    """One slot: at most one running app process and its pool of idle connections."""

    def __init__(self, proxy: ModuleProxy, index: int) -> None:
        self._proxy = proxy
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0
        self._ready = False
        self._starting: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._idle: list[tuple[float, Upstream]] = []
        self._stopping = False

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def ensure_started(self) -> None:
        if self._ready and self.process is not None and self.process.returncode is None:
            return
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        starting = self._starting
        try:
            # shield: one waiter's client going away must not cancel everyone's start.
            await asyncio.shield(starting)
        finally:
            if starting.done() and self._starting is starting:
                self._starting = None

    async def _start(self) -> None:
        proxy = self._proxy
        options = proxy.options
        proxy.check_rapid_fails()
        self._ready = False
        self.port = free_loopback_port()
        env = dict(os.environ)
        env.update(options.env)
        env.update(
            TIERCEL_PORT=str(self.port),
            TIERCEL_TOKEN=proxy.token,
            TIERCEL_PATH_BASE=options.path_base,
        )
        log_file = proxy.open_stdout_log()
        extra: dict[str, Any] = {}
        if sys.platform == "win32":
            extra["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            # Its own session: a Ctrl+C in the terminal reaches the module, which stops the app.
            extra["start_new_session"] = True
        argv: Sequence[str] = options.command
        report: int | None = None  # where the launcher says why the command could not run
        report_write: int | None = None
        if _LAUNCHER_USABLE:
            report, report_write = os.pipe()
            os.set_blocking(report, False)
            argv = _launcher_argv(options.command, report_write)
            extra["pass_fds"] = (report_write,)
        process: asyncio.subprocess.Process | None = None
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=options.working_directory,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT if log_file is not None else None,
                **extra,
            )
        except OSError as exc:
            proxy.record_crash()
            raise BadGateway(
                f"the app process could not be started: {options.command[0]!r}: "
                f"{exc.strerror or exc}"
            ) from None
        finally:
            if log_file is not None:
                log_file.close()
            if report_write is not None:
                os.close(report_write)
            if process is None and report is not None:
                os.close(report)
        try:
            await self._wait_until_listening(process, report)
        finally:
            if report is not None:
                os.close(report)

    async def _wait_until_listening(
        self, process: asyncio.subprocess.Process, report: int | None
    ) -> None:
        options = self._proxy.options
        self.process = process
        self._stopping = False
        log.info(
            "started app process %d on 127.0.0.1:%d: %s",
            process.pid,
            self.port,
            " ".join(options.command),
        )
        self._watcher = asyncio.ensure_future(self._watch(process))
        deadline = time.monotonic() + options.startup_time_limit
        delay = 0.02
        while True:
            if process.returncode is not None:
                failure = _launcher_failure(report)
                if failure:
                    raise BadGateway(
                        f"the app process could not be started: {options.command[0]!r}: {failure}"
                    )
                raise BadGateway(
                    f"the app process exited with code {process.returncode} before listening "
                    f"on 127.0.0.1:{self.port}"
                )
            try:
                upstream = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port, limit=_READ_SIZE * 4), 1.0
                )
            except (TimeoutError, OSError):
                pass
            else:
                self._idle.append((time.monotonic(), upstream))
                self._ready = True
                log.info("app process %d is listening", process.pid)
                return
            left = deadline - time.monotonic()
            if left <= 0:
                log.error(
                    "app process %d did not listen within %g s; killing it",
                    process.pid,
                    options.startup_time_limit,
                )
                self._kill(process)
                raise BadGateway(
                    f"the app process did not listen on 127.0.0.1:{self.port} within "
                    f"{options.startup_time_limit:g} s (startup_time_limit); it was killed"
                )
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 0.25)

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if self.process is process:
            self._ready = False
            self._close_idle()
        if self._stopping:
            return
        self._proxy.record_crash()
        log.warning(
            "app process %d exited with code %s; the next request starts a new one",
            process.pid,
            code,
        )

    def _kill(self, process: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()

    def _close_idle(self) -> None:
        for _, (_, writer) in self._idle:
            writer.close()
        self._idle.clear()

    async def connection(self) -> tuple[Upstream, bool]:
        """An upstream connection, and whether it came from the pool (it may be stale)."""
        fresh_after = time.monotonic() - IDLE_CONNECTION_LIFETIME
        while self._idle:
            since, (reader, writer) = self._idle.pop()
            if since > fresh_after and not reader.at_eof() and not writer.is_closing():
                return (reader, writer), True
            writer.close()
        try:
            upstream = await asyncio.open_connection("127.0.0.1", self.port, limit=_READ_SIZE * 4)
        except OSError as exc:
            raise _ConnectFailed(
                f"cannot connect to the app process on 127.0.0.1:{self.port}: {exc.strerror}"
            ) from None
        return upstream, False

    async def settle(self) -> None:
        """After a failed exchange: give a process that is dying the moment to be seen dead,
        so that the retry starts a new one instead of knocking on a closed port."""
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), 0.5)

    def release(self, upstream: Upstream, reusable: bool) -> None:
        reader, writer = upstream
        if (
            reusable
            and self._ready
            and not reader.at_eof()
            and not writer.is_closing()
            and len(self._idle) < self._proxy.options.max_idle_connections
        ):
            self._idle.append((time.monotonic(), upstream))
        else:
            writer.close()

    async def stop(self, time_limit: float) -> None:
        """Ask the process to stop, wait up to ``time_limit`` seconds, then kill it."""
        self._stopping = True
        self._ready = False
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        self._close_idle()
        process = self.process
        if process is None or process.returncode is not None:
            return
        log.info("stopping app process %d", process.pid)
        with contextlib.suppress(ProcessLookupError):
            if sys.platform == "win32":
                process.send_signal(signal.CTRL_BREAK_EVENT)
            else:
                process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), time_limit)
        except TimeoutError:
            log.warning(
                "app process %d did not stop within %g s (shutdown_time_limit); killing it",
                process.pid,
                time_limit,
            )
            self._kill(process)
            await process.wait()

    def kill_now(self) -> None:
        """Last resort when no event loop is left to stop the process politely."""
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL if sys.platform != "win32" else 9)


class _ReadAhead:
    """The response body between the upstream and the client, bounded in bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.ended = False
        self.error: BaseException | None = None
        self.readable = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()

    async def put(self, data: bytes) -> None:
        while self.size >= self.limit:
            self.writable.clear()
            await self.writable.wait()
        self.chunks.append(data)
        self.size += len(data)
        self.readable.set()

    def finish(self, error: BaseException | None = None) -> None:
        self.ended = True
        self.error = error
        self.readable.set()

    async def get(self) -> bytes | None:
        """The next piece (several chunks joined), or None at the end."""
        while not self.chunks:
            if self.ended:
                if self.error is not None:
                    raise self.error
                return None
            self.readable.clear()
            await self.readable.wait()
        data = b"".join(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
        self.chunks.clear()
        self.size = 0
        self.writable.set()
        return data


class ModuleProxy:
    """An ASGI app that forwards every request to the app process(es) it owns.

    ``command`` is the app's command line as a list (``["tiercel", "myapp:app"]``); ``env`` adds
    to the environment the app inherits; ``path_base`` is passed as ``TIERCEL_PATH_BASE``. The
    other keywords are ``ModuleOptions`` fields. Call ``await aclose()`` (or run the ASGI
    lifespan) to stop the processes.
    """

    def __init__(
        self,
        command: Sequence[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        path_base: str = "",
        options: ModuleOptions | None = None,
        **settings: Any,
    ) -> None:
        if options is None:
            options = ModuleOptions(
                command=tuple(command or ()), env=dict(env or {}), path_base=path_base, **settings
            )
        elif command is not None or env is not None or path_base or settings:
            raise ConfigError("give ModuleProxy either options= or the separate settings")
        self.options = options
        self.token = secrets.token_urlsafe(32)
        self.slots = [AppProcess(self, i) for i in range(options.processes)]
        self._next_slot = 0
        self._crashes: collections.deque[float] = collections.deque()
        self._refusing_logged = False
        self._closed = False

    # -- process bookkeeping ----------------------------------------------------------------

    def record_crash(self) -> None:
        self._crashes.append(time.monotonic())

    def check_rapid_fails(self) -> None:
        now = time.monotonic()
        while self._crashes and self._crashes[0] <= now - CRASH_WINDOW:
            self._crashes.popleft()
        limit = self.options.rapid_fails_per_minute
        if len(self._crashes) > limit:
            wait = self._crashes[0] + CRASH_WINDOW - now
            message = (
                f"the app process crashed {len(self._crashes)} times within a minute, more than "
                f"rapid_fails_per_minute ({limit}); it is not restarted for another {wait:.0f} s"
            )
            if not self._refusing_logged:
                log.error("%s", message)
                self._refusing_logged = True
            raise BadGateway(message)
        self._refusing_logged = False

    def open_stdout_log(self) -> IO[bytes] | None:
        """A new log file for the app's stdout and stderr, named as ANCM names them."""
        base = self.options.stdout_log_file
        if base is None:
            return None
        stamp = time.strftime("%Y%m%d%H%M%S")
        path = f"{base}_{stamp}_{os.getpid()}.log"
        directory = os.path.dirname(path)
        try:
            if directory:
                os.makedirs(directory, exist_ok=True)
            return open(path, "ab")
        except OSError as exc:
            log.error("cannot open the stdout log %s: %s; the app's output is not kept", path, exc)
            return None

    @property
    def pids(self) -> list[int]:
        return [slot.pid for slot in self.slots if slot.pid is not None]

    async def aclose(self) -> None:
        """Stop every app process (SIGTERM, then kill after ``shutdown_time_limit``)."""
        self._closed = True
        await asyncio.gather(*(s.stop(self.options.shutdown_time_limit) for s in self.slots))

    def kill_now(self) -> None:
        for slot in self.slots:
            slot.kill_now()

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            raise RuntimeError(f"tiercel module cannot forward {scope['type']!r} connections")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _pick(self) -> AppProcess:
        slot = self.slots[self._next_slot]
        self._next_slot = (self._next_slot + 1) % len(self.slots)
        return slot

    async def _http(self, scope: Message, receive: Receive, send: Send) -> None:
        if self._closed:
            await _error_page(send, 503, "the module is shutting down")
            return
        slot = self._pick()
        try:
            await slot.ensure_started()
        except BadGateway as exc:
            await _error_page(send, 502, str(exc))
            return
        first = await receive()
        if first["type"] == "http.disconnect":
            return
        head, chunked = self._request_head(scope, first, slot.port)
        body = first.get("body", b"")
        more = bool(first.get("more_body"))
        idempotent = scope["method"] in _IDEMPOTENT
        for attempt in (1, 2):
            last = attempt == 2
            try:
                if last:
                    await slot.settle()
                    await slot.ensure_started()  # it may have died: then start a new one
                upstream, pooled = await slot.connection()
            except _ConnectFailed as exc:
                if not last:
                    continue  # nothing was sent yet: safe to try again
                await _error_page(send, 502, str(exc))
                return
            except BadGateway as exc:
                await _error_page(send, 502, str(exc))
                return
            reader, writer = upstream
            writer.write(head + (encode_chunk(body) if chunked else body))
            if chunked and not more:
                writer.write(LAST_CHUNK)
            response = ResponseReader(scope["method"])
            pump = asyncio.ensure_future(
                self._pump_body(receive, writer, chunked) if more else _nothing()
            )
            try:
                started, pending = await self._read_head(reader, response, scope, send)
            except _NothingReceived as exc:
                pump.cancel()
                writer.close()
                resend = not last and not more
                if resend and await self._may_resend(slot, pooled, idempotent):
                    continue
                await _error_page(send, 502, _describe(exc.cause, slot))
                return
            except (OSError, UpstreamProtocolError, BadGateway) as exc:
                pump.cancel()
                writer.close()
                await _error_page(send, 502, _describe(exc, slot))
                return
            except BaseException:
                pump.cancel()
                writer.close()
                raise
            await self._relay(
                slot=slot,
                upstream=upstream,
                response=response,
                started=started,
                pending=pending,
                pump=pump,
                send=send,
            )
            return

    async def _may_resend(self, slot: AppProcess, pooled: bool, idempotent: bool) -> bool:
        """Whether a request that got no answer may go once more, on a new connection (to a
        new process if need be). Idempotent ones may. Others only when the process lives on:
        then it closed an idle pooled connection as the request arrived, and did not see the
        request. When it died, it may have acted on the request: 502 instead."""
        if idempotent:
            return True
        if not pooled:
            return False
        await slot.settle()
        return slot.alive

    def _request_head(self, scope: Message, first: Message, port: int) -> tuple[bytes, bool]:
        """The upstream request head, and whether its body goes chunked."""
        headers: list[tuple[bytes, bytes]] = []
        forwarded_for: bytes | None = None
        forwarded_proto: bytes | None = None
        content_length: bytes | None = None
        has_host = False
        for raw_name, value in strip_hop_by_hop(list(scope["headers"])):
            name = raw_name.lower()
            if name == b"content-length":
                content_length = value
            if name in _DROPPED_REQUEST_HEADERS:
                continue
            if name == b"x-forwarded-for":
                forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
                continue
            if name == b"x-forwarded-proto":
                forwarded_proto = (
                    value if forwarded_proto is None else forwarded_proto + b", " + value
                )
                continue
            has_host = has_host or name == b"host"
            headers.append((name, value))
        if not has_host:
            headers.insert(0, (b"host", b"127.0.0.1:%d" % port))
        client = scope.get("client")
        if client:
            host = str(client[0])
            node = (f"[{host}]" if ":" in host else host).encode("ascii", "replace")
            forwarded_for = node if forwarded_for is None else forwarded_for + b", " + node
        if forwarded_for is not None:
            headers.append((b"x-forwarded-for", forwarded_for))
        proto = str(scope.get("scheme", "http")).encode("ascii")
        forwarded_proto = proto if forwarded_proto is None else forwarded_proto + b", " + proto
        headers.append((b"x-forwarded-proto", forwarded_proto))
        target, outer_base = _target_under_root_path(scope)
        if outer_base:
            prefix = quote(outer_base, safe=_PATH_SAFE, errors="surrogateescape")
            headers.append((b"x-forwarded-prefix", prefix.encode("ascii")))
        headers.append((TOKEN_HEADER, self.token.encode("ascii")))
        body = first.get("body", b"")
        chunked = False
        if content_length is not None:
            headers.append((b"content-length", content_length))
        elif first.get("more_body"):
            chunked = True
            headers.append((b"transfer-encoding", b"chunked"))
        elif body or scope["method"] in ("POST", "PUT", "PATCH"):
            headers.append((b"content-length", b"%d" % len(body)))
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        return serialize_request_head(scope["method"], target, headers), chunked

    async def _pump_body(
        self, receive: Receive, writer: asyncio.StreamWriter, chunked: bool
    ) -> bool:
        """Forward the rest of the request body; True when all of it was sent."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                writer.close()
                return False
            data = message.get("body", b"")
            try:
                if data:
                    writer.write(encode_chunk(data) if chunked else data)
                if not message.get("more_body"):
                    if chunked:
                        writer.write(LAST_CHUNK)
                    await writer.drain()
                    return True
                await writer.drain()
            except OSError:
                return False  # the app closed the connection; the response side reports it

    async def _read_head(
        self, reader: asyncio.StreamReader, response: ResponseReader, scope: Message, send: Send
    ) -> tuple[ResponseStarted, list[ResponseEvent]]:
        """The response head, and the events that came with it in the same read. The app's
        1xx responses (103 Early Hints) go on to the client when the front can send them;
        100 Continue does not: the front answered the client's Expect itself."""
        relay_informational = INFORMATIONAL_EXTENSION in (scope.get("extensions") or {})
        timeout = self.options.request_timeout
        received = 0
        while True:
            try:
                async with asyncio.timeout(timeout):
                    data = await reader.read(_READ_SIZE)
                events = response.feed(data) if data else response.feed_eof()
            except TimeoutError:
                raise BadGateway(
                    f"the app did not answer within {timeout:g} s (request_timeout)"
                ) from None
            except (OSError, UpstreamProtocolError) as exc:
                if received:
                    raise
                raise _NothingReceived(exc) from None
            received += len(data)
            for index, event in enumerate(events):
                if isinstance(event, ResponseStarted):
                    return event, events[index + 1 :]
                if isinstance(event, Informational) and relay_informational and event.status != 100:
                    await send(
                        {
                            "type": INFORMATIONAL_EXTENSION,
                            "status": event.status,
                            "headers": strip_hop_by_hop(event.headers),
                        }
                    )

    async def _relay(
        self,
        *,
        slot: AppProcess,
        upstream: Upstream,
        response: ResponseReader,
        started: ResponseStarted,
        pending: list[ResponseEvent],
        pump: asyncio.Future[Any],
        send: Send,
    ) -> None:
        reader, writer = upstream
        headers = [
            (name, value)
            for name, value in strip_hop_by_hop(started.headers)
            if not (started.chunked and name == b"content-length")
        ]
        buffer = _ReadAhead(self.options.response_buffer_size)

        async def read_upstream() -> None:
            timeout = self.options.request_timeout
            keep_alive = False
            events = pending
            try:
                while True:
                    for event in events:
                        if isinstance(event, Body):
                            await buffer.put(event.data)
                        elif isinstance(event, ResponseEnded):
                            keep_alive = event.keep_alive
                            buffer.finish()
                            if not pump.done():
                                pump.cancel()  # the app answered without reading everything
                                keep_alive = False
                            elif pump.cancelled() or pump.exception() or not pump.result():
                                keep_alive = False
                            slot.release(upstream, keep_alive)
                            return
                    async with asyncio.timeout(timeout):
                        data = await reader.read(_READ_SIZE)
                    events = response.feed(data) if data else response.feed_eof()
            except BaseException as exc:
                writer.close()
                buffer.finish(exc if isinstance(exc, Exception) else None)
                if not isinstance(exc, Exception):
                    raise

        reading = asyncio.ensure_future(read_upstream())
        try:
            await send(
                {"type": "http.response.start", "status": started.status, "headers": headers}
            )
            while True:
                try:
                    data = await buffer.get()
                except (OSError, UpstreamProtocolError, TimeoutError) as exc:
                    # Too late for a 502: the status is sent. Returning without the end of
                    # the body makes the engine abort the connection, so the client sees a
                    # broken response instead of a short one that looks complete.
                    log.warning("response from app process cut short: %s", _describe(exc, slot))
                    return
                if data is None:
                    break
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if not reading.done():
                reading.cancel()
                writer.close()
            if not pump.done():
                pump.cancel()


async def _nothing() -> bool:
    return True


def _target_under_root_path(scope: Message) -> tuple[bytes, str]:
    """The request target for the app, and the path base the front itself is under.

    The scope's ``root_path`` is the front's own path base (its ``--root-path``, an
    X-Forwarded-Prefix it believed, the part of the path a prefix router is mounted at); the
    app's path base (TIERCEL_PATH_BASE) is still inside ``path``, for the app to find. The app
    gets the path below the front's base, spelled as the client spelled it, and the front's
    base as X-Forwarded-Prefix, which it puts in front of its own (as ASP.NET does with
    UseForwardedHeaders before UsePathBase)."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    outer: str = scope.get("root_path", "")
    if not outer:
        return raw_path, ""
    path: str = scope["path"]
    rest = path[len(outer) :] if path.startswith(outer) else path
    return _raw_tail(raw_path, rest) or _escape_path(rest or "/"), outer


def _raw_tail(raw_path: bytes, decoded: str) -> bytes | None:
    """The end of ``raw_path``, from a '/', that decodes to ``decoded`` (the client's own
    escapes are kept), or None."""
    text = raw_path.decode("latin-1")
    start = text.find("/")
    while start != -1:
        if unquote(text[start:], errors="replace") == decoded:
            return raw_path[start:]
        start = text.find("/", start + 1)
    return None


def _escape_path(path: str) -> bytes:
    return quote(path, safe=_PATH_SAFE, errors="surrogateescape").encode("ascii")


def _describe(exc: BaseException, slot: AppProcess) -> str:
    if isinstance(exc, BadGateway):
        return str(exc)
    process = slot.process
    if process is not None and process.returncode is not None:
        return f"the app process exited with code {process.returncode} during the request"
    if isinstance(exc, UpstreamProtocolError):
        return f"the app process sent an invalid HTTP response: {exc}"
    return f"the connection to the app process failed: {exc or type(exc).__name__}"


async def _error_page(send: Send, status: int, message: str) -> None:
    title = "502 Bad Gateway" if status == 502 else "503 Service Unavailable"
    page = (
        f"<!DOCTYPE html><html><head><title>{title}</title></head><body>"
        f"<h1>{title}</h1><p>tiercel module: {html.escape(message)}.</p></body></html>\n"
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", b"%d" % len(page)),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": page})
