"""``tiercel APP --workers N``: one supervisor process and N worker processes sharing its sockets.

Theory of operation. The supervisor binds every listen URL once (``bind_endpoints``) and keeps
those sockets open for its whole life. Each worker is a fresh interpreter running the same
``tiercel`` command line (``python -m tiercel.apps.cli ARGV``), started with the listening sockets
passed down as inherited descriptors (``pass_fds``; ``TIERCEL_WORKER_LISTENERS`` says which
descriptor is which URL) and one end of a socket pair, its *channel* to the supervisor
(``TIERCEL_WORKER_CHANNEL``). All processes accept from the same kernel queue, so a worker that
stops, crashes or starts never makes the port refuse a connection: while the supervisor holds the
socket, connections wait in its queue until some worker accepts them. (``SO_REUSEPORT`` would give
each worker its own queue, and the connections queued on a worker's socket when it closes are
reset: exactly what a rolling restart must avoid. Inherited sockets also work for unix: URLs.
``--reuse-port`` opts into it for an even spread of connections: see its section at the end.)

The channel carries one line per message, worker to supervisor:

    ready SUMMARY     serving now (SUMMARY is the "tiercel ... serving APP (...)" line)
    error MESSAGE     could not start; MESSAGE is the one-line error the command would print
    recycle           served its --max-requests; replace me

and in the other direction it is a lifeline: when the supervisor dies, the worker reads end of
file and stops itself gracefully (SIGTERM to itself, so every adapter's own shutdown runs).

Each worker is in one of three states: starting (until ``ready``), serving, stopping (sent
SIGTERM, killed if still alive after --shutdown-timeout plus a margin). The supervisor keeps N
workers that are not stopping. A worker that must go while healthy (SIGHUP's rolling restart, or
--max-requests) first gets a replacement; only when the replacement says ``ready`` is the old one
sent SIGTERM, and only one such replacement is under way at a time. A worker that exits without
being asked is replaced at once; one that exits before ``ready`` is a start-up failure: before
the first full set of workers was ever ready it ends the whole command with its error, later
STARTUP_FAILURE_LIMIT failures in a row do (with a growing pause between attempts).

SIGTERM or SIGINT to the supervisor sends SIGTERM to every worker (they finish the requests in
flight); a second one is forwarded too (the workers' forced stop). Workers run in their own
process group, so Ctrl-C in a terminal reaches only the supervisor and each worker sees one
signal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tiercel.core.context import EngineObserver, Rejection
from tiercel.core.errors import ConfigError
from tiercel.core.stream import HttpStream

if TYPE_CHECKING:
    from tiercel.adapters.sockets import Listener
    from tiercel.core.addresses import Endpoint

CHANNEL_ENV = "TIERCEL_WORKER_CHANNEL"  # the worker's end of its socket pair, a descriptor number
STARTUP_FAILURE_LIMIT = 3  # start-up failures in a row (after the first start) that end it all
STOP_MARGIN = 5.0  # seconds past --shutdown-timeout for the lifespan shutdown and exit
_FIRST_RETRY_DELAY = 0.5  # then doubled per failure in a row, at most _MAX_RETRY_DELAY
_MAX_RETRY_DELAY = 10.0

log = logging.getLogger("tiercel.error")


# -- options ------------------------------------------------------------------------------------


def _positive(flag: str) -> Any:
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: {flag} takes a whole number above 0")
        return int(text)

    return parse


def _not_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (0 or more)")
    return int(text)


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("worker processes")
    group.add_argument(
        "--workers",
        type=_positive("--workers"),
        default=1,
        metavar="N",
        help="serve from N processes sharing the listening sockets, under a supervisor: "
        "a crashed worker is replaced, SIGHUP restarts them one by one (default 1: one process)",
    )
    group.add_argument(
        "--max-requests",
        type=_positive("--max-requests"),
        metavar="N",
        help="replace a worker after it has served about N requests (for apps that leak)",
    )
    group.add_argument(
        "--max-requests-jitter",
        type=_not_negative,
        metavar="J",
        help="add a random 0..J to each worker's --max-requests, so they do not all restart "
        "together",
    )
    add_reuse_port_argument(group)


@dataclass(frozen=True)
class WorkerSettings:
    workers: int = 1
    max_requests: int | None = None
    max_requests_jitter: int = 0
    reuse_port: bool = False  # each worker binds its own SO_REUSEPORT socket (see below)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> WorkerSettings:
        if args.max_requests_jitter is not None and args.max_requests is None:
            raise ConfigError("--max-requests-jitter needs --max-requests N")
        if sys.platform == "win32" and (args.workers > 1 or args.max_requests is not None):
            raise ConfigError(
                "--workers and --max-requests need POSIX signals and inherited sockets, which "
                "Windows lacks: run one tiercel process there"
            )
        if getattr(args, "adapter", None) == "httpsys" and (
            args.workers > 1 or args.max_requests is not None
        ):
            raise ConfigError(
                "--workers and --max-requests need a socket adapter: --adapter asyncio, trio "
                "or threads"
            )
        reuse_port = check_reuse_port_option(args)
        return cls(args.workers, args.max_requests, args.max_requests_jitter or 0, reuse_port)

    @property
    def supervised(self) -> bool:
        """More than one process, or recycling: either needs a supervisor."""
        return self.workers > 1 or self.max_requests is not None

    def request_limit(self) -> int | None:
        """This worker's own limit: --max-requests plus its share of the jitter."""
        if self.max_requests is None:
            return None
        return self.max_requests + random.randint(0, self.max_requests_jitter)


def _error_line(message: str) -> None:
    print(f"tiercel: error: {message}", file=sys.stderr)


# -- the worker's side --------------------------------------------------------------------------


class _WorkerLogFormatter(logging.Formatter):
    """Server messages say which worker wrote them; access lines stay in Common Log Format."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if record.name == "tiercel.access":
            return line
        return f"[worker {os.getpid()}] {line}"


class _CountingObserver:
    """Passes engine notifications on and calls ``on_limit`` once, at the Nth response."""

    def __init__(self, inner: EngineObserver, limit: int, on_limit: Any) -> None:
        self.inner = inner
        self.limit = limit
        self.on_limit = on_limit
        self.completed = 0
        self._lock = threading.Lock()  # the threads adapter completes responses on many threads

    def response_completed(self, stream: HttpStream) -> None:
        self.inner.response_completed(stream)
        with self._lock:
            self.completed += 1
            reached = self.completed == self.limit
        if reached:
            self.on_limit(self.limit)

    def request_rejected(self, rejection: Rejection) -> None:
        self.inner.request_rejected(rejection)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # any notification EngineObserver gains later


class WorkerChannel:
    """This process is a worker under a supervisor: tell it how start-up went, ask it for a
    replacement, and stop when it goes away."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._recycle_asked = False
        threading.Thread(target=self._lifeline, name="tiercel-lifeline", daemon=True).start()

    @classmethod
    def from_environment(cls) -> WorkerChannel | None:
        """The channel when a supervisor started this process, else None. The variable is
        removed so that the app's own child processes never take it for theirs."""
        text = os.environ.pop(CHANNEL_ENV, None)
        if text is None:
            return None
        if not text.isdigit():
            raise SystemExit(f"tiercel: error: {CHANNEL_ENV}={text!r} is not a descriptor number")
        sock = socket.socket(fileno=int(text))
        sock.set_inheritable(False)
        for handler in logging.getLogger("tiercel").handlers:
            handler.setFormatter(_WorkerLogFormatter("%(message)s"))
        return cls(sock)

    def _lifeline(self) -> None:
        try:
            while self._sock.recv(256):
                pass  # the supervisor sends nothing today; end of file is the message
        except OSError:
            pass
        log.warning("the supervisor has gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    def _send(self, kind: str, text: str = "") -> bool:
        line = f"{kind} {' '.join(text.split())}".rstrip() + "\n"
        with self._lock:
            try:
                self._sock.sendall(line.encode("utf-8", "replace"))
            except OSError:
                return False
        return True

    def ready(self, summary: str) -> None:
        self._send("ready", summary)

    def report_error(self, message: str) -> bool:
        """Hand a start-up error to the supervisor, which prints it once for all workers."""
        return self._send("error", message)

    def attach(self, server: Any, args: argparse.Namespace) -> None:
        """Count the responses of ``server`` towards --max-requests."""
        limit = WorkerSettings.from_args(args).request_limit()
        if limit is None:
            return
        log.info("will recycle after %d requests (--max-requests)", limit)
        context = server._impl.context
        context.observer = _CountingObserver(context.observer, limit, self._ask_for_recycle)

    def _ask_for_recycle(self, served: int) -> None:
        if self._recycle_asked:
            return
        self._recycle_asked = True
        log.info("served %d requests (--max-requests): asking for a replacement", served)
        self._send("recycle")


def report_startup_error(worker: WorkerChannel | None, exc: BaseException, code: int) -> int:
    """Print the one-line start-up error (a supervised worker hands it to its supervisor)."""
    if worker is None or not worker.report_error(str(exc)):
        _error_line(str(exc))
    return code


# -- the supervisor -----------------------------------------------------------------------------


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen[bytes]
    channel: socket.socket
    replaces: _Worker | None = None  # the worker to stop once this one is ready
    ready: bool = False
    retire_reason: str | None = None  # set when it should be replaced while healthy
    stop_deadline: float | None = None  # set when it was sent SIGTERM
    killed: bool = False
    error: str | None = None  # the start-up error it reported
    inbox: bytes = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stopping(self) -> bool:
        return self.stop_deadline is not None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    def __init__(
        self,
        argv: list[str],
        listeners: list[Listener],
        settings: WorkerSettings,
        shutdown_timeout: float,
    ) -> None:
        self.argv = argv
        self.listeners = listeners
        self.settings = settings
        self.shutdown_timeout = shutdown_timeout
        self.workers: list[_Worker] = []
        self.booted = False  # a full set of workers has been ready at least once
        self.failures_in_a_row = 0
        self.next_spawn_at = 0.0
        self.shutting_down = False
        self.exit_code = 0
        self.fatal_error: str | None = None
        self._signals: deque[int] = deque()
        self._restarting = False  # a SIGHUP's rolling restart is under way
        self._selector = selectors.DefaultSelector()
        self._listener_env, self._listener_fds = _listeners_for_workers(listeners, settings)

    # -- processes ----------------------------------------------------------------------------

    def _spawn(self, replaces: _Worker | None = None) -> _Worker:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env[CHANNEL_ENV] = str(theirs.fileno())
        env.update(self._listener_env)
        fds = [theirs.fileno(), *self._listener_fds]
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "tiercel.apps.cli", *self.argv],
                env=env,
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                process_group=0,  # Ctrl-C reaches the supervisor only; it forwards one SIGTERM
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        worker = _Worker(process, ours, replaces=replaces)
        self.workers.append(worker)
        self._selector.register(ours, selectors.EVENT_READ, worker)
        return worker

    def _stop(self, worker: _Worker, sig: int = signal.SIGTERM) -> None:
        if worker.stop_deadline is None:
            worker.stop_deadline = time.monotonic() + self.shutdown_timeout + STOP_MARGIN
        with contextlib.suppress(ProcessLookupError):
            worker.process.send_signal(sig)

    def _pids(self) -> str:
        return ", ".join(str(w.pid) for w in self.workers if not w.stopping)

    # -- messages -----------------------------------------------------------------------------

    def _read(self, worker: _Worker) -> bool:
        """Take what the worker sent; False when there was nothing (for now, or ever again)."""
        try:
            data = worker.channel.recv(65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.channel)
            return False
        worker.inbox += data
        *lines, worker.inbox = worker.inbox.split(b"\n")
        for line in lines:
            kind, _, text = line.decode("utf-8", "replace").partition(" ")
            if kind == "ready":
                self._on_ready(worker, text)
            elif kind == "error":
                worker.error = text
            elif kind == "recycle" and worker.retire_reason is None:
                worker.retire_reason = "it served its --max-requests"
        return True

    def _on_ready(self, worker: _Worker, summary: str) -> None:
        worker.ready = True
        self.failures_in_a_row = 0
        old, worker.replaces = worker.replaces, None
        if old is not None and old.process.poll() is None:
            log.info(
                "worker %d is ready; stopping worker %d (%s)",
                worker.pid,
                old.pid,
                old.retire_reason,
            )
            self._stop(old)
        if not self.booted and sum(w.ready for w in self.workers if not w.stopping) >= (
            self.settings.workers
        ):
            self.booted = True
            self._announce(summary)

    def _announce(self, summary: str) -> None:
        log.info("%s", summary)
        for listener in self.listeners:
            log.info("listening on %s", listener.describe())
        recycling = ""
        if self.settings.max_requests is not None:
            jitter = self.settings.max_requests_jitter
            recycling = (
                f"; each replaced after {self.settings.max_requests}"
                + (f"+0..{jitter}" if jitter else "")
                + " requests"
            )
        count = self.settings.workers
        log.info(
            "supervising %d worker%s (pid%s %s), %s%s",
            count,
            "s" if count > 1 else "",
            "s" if count > 1 else "",
            self._pids(),
            _sharing_description(self.settings),
            recycling,
        )
        _warn_about_reuse_port_restarts(self.settings)

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> int:
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        self._selector.register(wake_read, selectors.EVENT_READ, None)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        previous_wakeup = signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
        try:
            for _ in range(self.settings.workers):
                self._spawn()
            while self.workers or not self.shutting_down:
                for key, _ in self._selector.select(0.1):
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            wake_read.recv(4096)
                    else:
                        self._read(key.data)
                while self._signals:
                    self._handle_signal(self._signals.popleft())
                self._reap()
                self._maintain()
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for worker in self.workers:  # only after an error in the loop itself
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
            for listener in self.listeners:
                listener.close()  # also removes unix socket files
            self._selector.close()
            wake_read.close()
            wake_write.close()
        if self.fatal_error is not None:
            _error_line(self.fatal_error)
        else:
            log.info("stopped")
        return self.exit_code

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)

    def _forward_rejection_summary_signal(self) -> None:
        """SIGUSR1: each worker logs its own rejection counts. Only serving workers get it: one
        still starting (or already stopping) may not handle it, and SIGUSR1 would kill it."""
        for worker in self.workers:
            if worker.ready and not worker.stopping:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGUSR1)

    def _handle_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return  # only to wake the loop; _reap looks
        if signum == signal.SIGUSR1:
            self._forward_rejection_summary_signal()
            return
        if signum == signal.SIGHUP:
            if self.shutting_down:
                return
            healthy = [w for w in self.workers if not w.stopping and w.replaces is None]
            log.info("SIGHUP: restarting %d worker(s) one by one", len(healthy))
            for worker in healthy:
                worker.retire_reason = "rolling restart"
            self._restarting = True
            return
        if not self.shutting_down:
            log.info(
                "shutting down %d worker(s) (finishing requests in flight; signal again to force)",
                len(self.workers),
            )
            self._shut_down()
        else:
            log.warning("forced shutdown")
            for worker in self.workers:
                self._stop(worker)  # a second signal: the workers stop at once

    def _shut_down(self) -> None:
        self.shutting_down = True
        for worker in self.workers:
            self._stop(worker)

    def _fail(self, worker: _Worker, code: int) -> None:
        """A worker could not start: stop everything and exit with its error."""
        # Printed last, after the other workers have stopped, so that it is what the user sees.
        self.fatal_error = (
            worker.error or f"worker {worker.pid} {describe_exit(code)} before it was ready"
        )
        self.exit_code = code if code in (1, 2) else 1
        self._shut_down()

    def _reap(self) -> None:
        for worker in list(self.workers):
            code = worker.process.poll()
            if code is None:
                continue
            while self._read(worker):
                pass  # what it sent just before it exited (its error) may still be unread
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.channel)
            worker.channel.close()
            self.workers.remove(worker)
            for other in self.workers:
                if other.replaces is worker:
                    other.replaces = None  # it takes the slot of the one that died
            if worker.stopping or self.shutting_down:
                if code not in (0, -signal.SIGTERM) or worker.killed:
                    log.info("worker %d stopped (%s)", worker.pid, describe_exit(code))
                continue
            if worker.ready:
                log.warning(
                    "worker %d died (%s); starting a replacement", worker.pid, describe_exit(code)
                )
                continue
            # It never became ready: a start-up failure.
            if not self.booted:
                self._fail(worker, code)
                continue
            self.failures_in_a_row += 1
            what = worker.error or describe_exit(code)
            if self.failures_in_a_row >= STARTUP_FAILURE_LIMIT:
                log.error(
                    "worker %d failed at start-up %d times in a row",
                    worker.pid,
                    self.failures_in_a_row,
                )
                self._fail(worker, code)
                continue
            delay = min(_FIRST_RETRY_DELAY * 2 ** (self.failures_in_a_row - 1), _MAX_RETRY_DELAY)
            log.error(
                "worker %d failed at start-up (%s); trying again in %gs", worker.pid, what, delay
            )
            self.next_spawn_at = time.monotonic() + delay

    def _maintain(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if (
                worker.stop_deadline is not None
                and now > worker.stop_deadline
                and not worker.killed
            ):
                log.warning(
                    "worker %d still running %gs after SIGTERM: killing it",
                    worker.pid,
                    self.shutdown_timeout + STOP_MARGIN,
                )
                worker.killed = True
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
        if self.shutting_down or now < self.next_spawn_at:
            return
        # A slot is a worker not told to stop; a replacement takes its old worker's slot.
        slots = sum(1 for w in self.workers if not w.stopping and w.replaces is None)
        for _ in range(self.settings.workers - slots):
            self._spawn()
        if any(w.replaces is not None for w in self.workers):
            return  # one replacement of a healthy worker at a time
        if self._restarting and not any(
            w.retire_reason == "rolling restart" and not w.stopping for w in self.workers
        ):
            self._restarting = False
            log.info("rolling restart done: workers %s", self._pids())
        retiring = next(
            (w for w in self.workers if w.retire_reason and w.ready and not w.stopping), None
        )
        if retiring is not None:
            replacement = self._spawn(replaces=retiring)
            log.info(
                "starting worker %d to replace worker %d (%s)",
                replacement.pid,
                retiring.pid,
                retiring.retire_reason,
            )


def supervise_if_wanted(args: argparse.Namespace, argv: list[str]) -> int | None:
    """Run the supervisor when --workers or --max-requests ask for one and return the exit code;
    None means: serve from this one process."""
    from tiercel.adapters.sockets import BindError, bind_endpoints

    from .cli import options_from_args

    try:
        settings = WorkerSettings.from_args(args)
        if not settings.supervised:
            return None
        options = options_from_args(args)
        if args.factory and not args.app:
            raise ConfigError("--factory needs an APP")
        check_reuse_port_endpoints(settings, list(options.endpoints))
        listeners = bind_endpoints(list(options.endpoints), reserve_reuse_port=settings.reuse_port)
    except ConfigError as exc:
        _error_line(str(exc))
        return 2
    except BindError as exc:
        _error_line(str(exc))
        return 1
    supervisor = Supervisor(argv, listeners, settings, options.shutdown_timeout)
    return supervisor.run()


# -- --reuse-port: each worker binds its own SO_REUSEPORT socket --------------------------------
#
# The default shares one inherited socket (one accept queue) among all the processes. With
# --reuse-port the supervisor binds each TCP address with SO_REUSEPORT but never listens on it:
# that fails fast on EADDRINUSE, turns port 0 into the port every worker then binds, and holds the
# port for the supervisor's life, while a socket that is not listening is not one the kernel
# hands connections to (a listening one that nobody accepts from would take its share and leave
# them waiting). Each worker binds and listens on its own socket and the kernel spreads new
# connections over the workers' queues. The price: when a worker stops, the connections still
# waiting in its own queue are reset, unless net.ipv4.tcp_migrate_req=1 (Linux 5.14+) moves them
# to another worker's queue (the asyncio adapter also accepts what is queued just before it
# closes its socket: sockets.take_reuse_port_queue). A replacement always binds before the
# worker it replaces stops.

_MIGRATE_REQ_SYSCTL = "/proc/sys/net/ipv4/tcp_migrate_req"


def add_reuse_port_argument(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--reuse-port",
        action="store_true",
        help="each worker binds its own SO_REUSEPORT socket and the kernel spreads connections "
        "over them (more even load; Linux and the BSDs, TCP addresses only); the default is one "
        "socket inherited by every worker",
    )


def check_reuse_port_option(args: argparse.Namespace) -> bool:
    if not getattr(args, "reuse_port", False):
        return False
    from tiercel.adapters.sockets import reuse_port_supported

    if not reuse_port_supported():
        raise ConfigError(
            f"--reuse-port needs SO_REUSEPORT that balances connections (Linux or a BSD), "
            f"which {sys.platform} lacks: leave it out to share one inherited socket"
        )
    if args.workers == 1 and args.max_requests is None:
        raise ConfigError("--reuse-port is for worker processes: add --workers N (N above 1)")
    return True


def check_reuse_port_endpoints(settings: WorkerSettings, endpoints: list[Endpoint]) -> None:
    from tiercel.adapters.sockets import REUSE_PORT_KINDS

    if not settings.reuse_port:
        return
    for endpoint in endpoints:
        if endpoint.kind not in REUSE_PORT_KINDS:
            raise ConfigError(
                f"--reuse-port cannot be used with {endpoint.url}: only TCP addresses can be "
                "bound again by each worker; leave out --reuse-port to share the socket"
            )


def _listeners_for_workers(
    listeners: list[Listener], settings: WorkerSettings
) -> tuple[dict[str, str], list[int]]:
    """The environment and descriptors that tell a worker which sockets to serve."""
    from tiercel.adapters.sockets import HANDED_DOWN_ENV, REUSE_PORT_ENV, reuse_port_addresses

    if settings.reuse_port:  # nothing inherited: each worker binds its own
        return {REUSE_PORT_ENV: reuse_port_addresses(listeners)}, []
    fds = [listener.sock.fileno() for listener in listeners]
    handed_down = [[listener.sock.fileno(), listener.endpoint.url] for listener in listeners]
    return {HANDED_DOWN_ENV: json.dumps(handed_down)}, fds


def _sharing_description(settings: WorkerSettings) -> str:
    if settings.reuse_port:
        return "each with its own SO_REUSEPORT socket"
    return "sockets inherited"


def migrate_req_setting() -> str | None:
    """net.ipv4.tcp_migrate_req ("0" or "1"); None where there is no such setting."""
    try:
        with open(_MIGRATE_REQ_SYSCTL, encoding="ascii") as setting:
            return setting.read().strip()
    except OSError:
        return None


def _warn_about_reuse_port_restarts(settings: WorkerSettings) -> None:
    if settings.reuse_port and sys.platform.startswith("linux") and migrate_req_setting() != "1":
        log.warning(
            "--reuse-port: connections queued on a worker's own socket as it stops can be "
            "reset; set "
            "sysctl net.ipv4.tcp_migrate_req=1 (Linux 5.14+) to hand them to the other workers"
        )
