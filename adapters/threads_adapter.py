"""The threaded adapter (``--adapter threads``): blocking sockets and a bounded pool of worker
threads, no event loop. Made for WSGI apps, and for places where no event loop may run.

Threads
-------
- **Acceptors**, one per listening socket: ``accept()``, then queue the connection for a worker.
- **Workers**, a fixed pool: a worker takes one connection at a time and drives its engine with
  blocking ``recv``/``send``. When a request arrives it runs the WSGI app inline, so an app that
  blocks holds only its own worker. ``wsgi.input`` reads the socket as the app asks for bytes.
- **Parked connections**: a connection with no request in flight and nothing to read gives its
  worker back, so idle keep-alive connections cost no thread. On Linux it waits in one epoll
  set that every idle worker polls, each registration one-shot, so the kernel hands a readable
  connection to exactly one worker, which serves it at once: no other thread, no queue and no
  lock hand-off between a request's bytes and its app (``_EpollHub``). Elsewhere the parker
  watches parked connections in a ``selectors`` selector, as cheroot and waitress do, and
  queues those that become readable.
- **The parker**: applies the engine's timers (keep-alive, request headers) to parked
  connections, shuts them down when the server stops, and does lingering closes.
- **The ticker**: the Date header once a second, certificate files every two seconds.

The engine is not thread-safe: a connection's engine is touched only by the one thread that
holds the connection. A parked connection is held by nobody; a worker (on readable bytes) or
the parker (on a timer) takes it with ``_Client.claim``, which only one of them can win. One who
loses marks it ``missed``, and the holder looks again before parking it, so no wake-up is lost.
The server-wide counters in ``ServerContext`` are guarded by a lock.

Sizing (environment variables, or ``tiercel --threads``)
-------------------------------------------------------
- ``TIERCEL_THREADS``: worker threads; default ``max(8, 2 * CPUs + 2)``. WSGI apps mostly wait
  on databases and other services, and the GIL already bounds the CPU side.
- ``TIERCEL_QUEUE_LIMIT``: connections that may wait for a worker; default 1000 (HTTP.sys's
  ``RequestQueueLimit``). When every worker is busy, connections wait in the queue and
  ``tiercel.error`` says so once per episode, at most every 10 s ("all N worker threads are
  busy; M connection(s) waiting"). Past the limit the acceptor answers new connections with
  ``503 Service Unavailable`` and ``Retry-After`` itself and closes them; keep-alive
  connections coming back with a new request are never refused.

HTTP/2 works (h2c and TLS with ALPN), but a connection's streams are served one after another
by its worker. Limits, timeouts and graceful shutdown are the engine's, as on every adapter.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import heapq
import itertools
import logging
import math
import os
import queue
import select
import selectors
import signal
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tiercel.apps.endpoints import EndpointManager
from tiercel.apps.loader import resolve_interface
from tiercel.apps.logs import (
    LoggingObserver,
    log_app_exception,
    log_app_problem,
    log_rejection_summary,
)
from tiercel.apps.options import ServerOptions
from tiercel.core.config import EngineConfig
from tiercel.core.connection import EngineConnection, open_connection
from tiercel.core.context import EngineObserver, Rejection, ServerContext, TransportInfo
from tiercel.core.delegation import Handoff
from tiercel.core.errors import ConfigError
from tiercel.core.events import ConnectionDelegated, Event, RequestReceived
from tiercel.core.files import FileSegment
from tiercel.core.http1 import error_response
from tiercel.core.response_cache import (
    CachedResponse,
    CacheKey,
    ResponseCache,
    ResponseCacheSettings,
)
from tiercel.core.stream import ClientDisconnected, HttpStream
from tiercel.core.wsgi import WsgiApp, WsgiCycle, WsgiErrors

from .delegation import DelegationFailed, QueueSender, peer_refusal, read_queue_blocking
from .files import sendfile_some
from .sockets import FIRST_REQUEST_GRACE, Listener, bind_endpoints

log = logging.getLogger("tiercel.error")

T = TypeVar("T")

POLL = 0.5  # longest blocking wait, so threads notice a shutdown
RECV_SIZE = 65_536
LINGER_SECONDS = 2.0  # lingering close: read and drop what the client still sends
DEFAULT_QUEUE_LIMIT = 1000
RETRY_AFTER = b"1"
SATURATION_LOG_INTERVAL = 10.0  # at most one "all N worker threads are busy" line per interval
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
_ARMED = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLONESHOT", 0)


def _env_count(name: str, default: int, minimum: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < minimum:
        raise ConfigError(f"{name} must be a whole number of at least {minimum} (got {text!r})")
    return int(text)


def worker_threads() -> int:
    """Worker threads for WSGI apps: ``TIERCEL_THREADS``, else ``max(8, 2 * CPUs + 2)``."""
    return _env_count("TIERCEL_THREADS", max(8, 2 * (os.cpu_count() or 1) + 2), 1)


def default_queue_limit() -> int:
    """Connections that may wait for a worker: ``TIERCEL_QUEUE_LIMIT``, else 1000."""
    return _env_count("TIERCEL_QUEUE_LIMIT", DEFAULT_QUEUE_LIMIT, 0)


class DaemonThreadPool(concurrent.futures.Executor):
    """A fixed pool of daemon threads for running WSGI apps beside an event loop.

    Unlike ``ThreadPoolExecutor``, whose threads the interpreter joins at exit, an app stuck in
    one of these threads cannot keep the process from exiting after a forced shutdown.
    """

    def __init__(self, threads: int, name: str) -> None:
        self.threads = threads
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._workers = [
            threading.Thread(target=self._work, name=f"{name}-{n + 1}", daemon=True)
            for n in range(threads)
        ]
        for worker in self._workers:
            worker.start()

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        if self._closed:
            raise RuntimeError("cannot run apps after the pool was shut down")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((future, fn, args, kwargs))
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        if cancel_futures:
            with contextlib.suppress(queue.Empty):
                while True:
                    item = self._queue.get_nowait()
                    if item is not None:
                        item[0].cancel()
        for _ in self._workers:
            self._queue.put(None)
        if wait:
            for worker in self._workers:
                worker.join()


class _LockedContext(ServerContext):
    """``ServerContext`` with its counters guarded: many threads open and close connections."""

    def __init__(self, config: EngineConfig, observer: EngineObserver, wall_time: float) -> None:
        super().__init__(config, observer, wall_time)
        self._lock = threading.Lock()
        if self.response_cache is not None:
            self.response_cache = _LockedResponseCache(
                self.response_cache.settings, self.response_cache_counters
            )

    def try_open_connection(self) -> bool:
        with self._lock:
            return super().try_open_connection()

    def connection_closed(self) -> None:
        with self._lock:
            super().connection_closed()

    def count_sent_file(self, how: str, count: int) -> None:
        with self._lock:
            self.file_counters[f"{how}_files"] += 1
            self.file_counters[f"{how}_bytes"] += count

    def record_rejection(self, rejection: Rejection) -> None:
        with self._lock:
            self.rejections[rejection.reason] += 1
        self.observer.request_rejected(rejection)

    def rejection_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.rejections)


class _LockedResponseCache(ResponseCache):
    """The response cache, shared by connections served on many threads."""

    def __init__(self, settings: ResponseCacheSettings, counters: Counter[str]) -> None:
        super().__init__(settings, counters)
        self._lock = threading.Lock()

    def lookup(self, key: CacheKey, now: float) -> CachedResponse | None:
        with self._lock:
            return super().lookup(key, now)

    def store(self, key: CacheKey, entry: CachedResponse) -> None:
        with self._lock:
            super().store(key, entry)


def _wait_readable(sock: socket.socket) -> bool:
    """Up to POLL seconds for a connection to accept (True also on errors: accept() says)."""
    try:
        return bool(select.select([sock], [], [], POLL)[0])
    except (OSError, ValueError):
        return True


def _log_app_error(line: str) -> None:
    log.error("%s", line)


class _Client:
    """One accepted connection, and the ``WsgiHost`` its app runs on. Only the thread that
    holds it (a worker or the parker) calls its methods."""

    handoff: Handoff | None = None  # set for a connection another tiercel delegated to us
    errors: WsgiErrors | None = None  # wsgi.errors, one per connection

    def __init__(
        self, server: ThreadedServer, sock: socket.socket, listener: Listener, remote: Any
    ) -> None:
        self.server = server
        self.sock = sock
        self.listener = listener
        self.remote = (remote[0], remote[1]) if isinstance(remote, tuple) else None
        self.fd = sock.fileno()
        self.timeout = sock.gettimeout()  # settimeout() is a system call: only on changes
        self.conn: EngineConnection | None = None
        self.pending: deque[HttpStream] = deque()  # requests whose app has not run yet
        self.dead = False
        self.eof = False
        self.shutdown_sent = False
        self.accepted_at = time.monotonic()
        self.received_any = False
        # Parking (see the module docstring): ``parked`` and ``missed`` under ``lock``;
        # ``timer_at`` (the parker's earliest timer for it) under the parker's lock;
        # ``in_epoll`` is touched by the holder only.
        self.lock = threading.Lock()
        self.parked = False
        self.missed = False
        self.timer_at: float | None = None
        self.in_epoll = False

    # -- the worker's loop --------------------------------------------------------------------

    def serve(self) -> bool:
        """Serve until nothing is left to do right now. True: park me. False: closed.

        After a response no ``recv`` is tried: the client has hardly had time to read it, let
        alone send the next request, and parking finds out at no extra cost (pipelined requests
        are already in the engine's buffer and come out of ``pop_events``)."""
        conn = self.conn
        if conn is None:
            conn = self.conn = self._open()
            if self.handoff is not None:
                self._feed_handoff(conn, self.handoff)
        answered = False
        while not self.dead:
            events = conn.pop_events()
            if events:
                self._handle(events)
            if self.pending:
                self._run_next()
                answered = True
            elif answered or not self._io(block=False):
                return True
        while self.pending:  # the connection died with requests whose app never ran
            self.pending.popleft().finish()
        return False

    def claim(self) -> bool:
        """Take a parked connection (a worker on readable bytes, the parker on a timer). False
        when someone else holds it; that holder then looks again before parking it."""
        with self.lock:
            if self.parked:
                self.parked = False
                return True
            self.missed = True
            return False

    def park(self) -> bool:
        """Give the connection back until bytes arrive or a timer is due. False: something
        happened meanwhile (``missed``), so the caller still holds it and must serve it again.
        True: parked; another thread may hold it from now on, so nothing here touches it."""
        server = self.server
        stopping = server.stopping
        if stopping and not self.shutdown_sent and self._may_shut_down(time.monotonic()):
            return False  # serve() sends the shutdown
        conn = self.conn
        assert conn is not None
        deadline = self.next_deadline()
        watch = conn.wants_read and not self.eof
        hub = server.hub
        if watch and hub is not None:
            hub.watch(self)
        with self.lock:
            if self.missed:
                self.missed = False
                return False
            self.parked = True
        parker = server.parker
        if watch and hub is None:
            parker.watch(self)
        if server.stopping and not stopping:
            # The stop began while this was being parked: the parker's sweep may have missed it.
            deadline = time.monotonic()
        if deadline is not None:
            parker.schedule(self, deadline)
        return True

    def _set_timeout(self, timeout: float | None) -> None:
        if timeout != self.timeout:
            self.sock.settimeout(timeout)
            self.timeout = timeout

    def _open(self) -> EngineConnection:
        if self.handoff is not None:  # addresses as the front saw them (perhaps a PROXY header's)
            info = TransportInfo(
                local_address=self.handoff.local_address,
                remote_address=self.handoff.remote_address,
                sendfile=True,
            )
        else:
            local = self.sock.getsockname()
            info = TransportInfo(
                local_address=(local[0], local[1]) if isinstance(local, tuple) else (local or None),
                remote_address=self.remote,
                sendfile=True,  # write_file
            )
        server = self.server
        return open_connection(server.context, info, time.monotonic(), self.listener.settings)

    def _io(self, block: bool) -> bool:
        """One step: a timer, a shutdown, or one ``recv``. False when nothing could be done
        without waiting (only when not ``block``)."""
        conn = self.conn
        assert conn is not None
        now = time.monotonic()
        if self.server.stopping and not self.shutdown_sent and self._may_shut_down(now):
            self.shutdown_sent = True
            self._handle(conn.shutdown(now))
            self._flush()
            return True
        deadline = conn.next_deadline()
        if deadline is not None and now >= deadline:
            self._handle(conn.on_timer(now))
            self._flush()
            return True
        wait = POLL if deadline is None else min(POLL, deadline - now)
        if self.eof or not conn.wants_read:
            if block:
                time.sleep(wait)
            return block
        try:
            if block:
                self._set_timeout(wait)
            elif self.timeout != 0.0:
                self._set_timeout(0.0)
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, TimeoutError):
            return block
        except OSError:
            self._close(abort=True)
            return True
        if not data:
            self.eof = True
        self.received_any = True
        events = conn.receive_data(data, time.monotonic() if block else now)
        if events:
            self._handle(events)
        self._flush()
        return True

    def _handle(self, events: Sequence[Event]) -> None:
        for event in events:
            if type(event) is RequestReceived:
                self.pending.append(event.stream)
            elif type(event) is ConnectionDelegated:
                self._hand_off(event)

    # -- request delegation (core/delegation.py) ------------------------------------------------

    def _feed_handoff(self, conn: EngineConnection, handoff: Handoff) -> None:
        """The bytes the delegating front read go to the engine before any from the socket."""
        self.received_any = True
        self._handle(conn.receive_data(handoff.data, time.monotonic()))
        self._flush()

    def _hand_off(self, event: ConnectionDelegated) -> None:
        """The socket goes to the queue's server; closing ours then sends nothing. On failure
        the engine has a 503 for ``_flush`` to send."""
        sender = self.server.delegation_sender
        try:
            if sender is None:
                raise DelegationFailed("this server has no delegation rules")
            sender.send(event.queue, event.handoff, self.sock.fileno())
        except DelegationFailed as exc:
            event.refuse(str(exc))  # the engine logs it as a rejection
            return
        self.dead = True
        self.server.forget(self)
        self._leave_epoll()
        self.sock.close()  # a plain close(2): neither FIN nor RST while the receiver has it

    def _flush(self) -> None:
        """Send what the engine produced; close when it says so."""
        conn = self.conn
        assert conn is not None
        while not self.dead:
            events = conn.pop_events()
            if events:
                self._handle(events)
            if conn.should_abort:
                self._close(abort=True)
                return
            data = conn.data_to_send()
            if not data or self._send(data):
                break  # nothing was sent, or sent at once: the engine has not run since
        if not self.dead and conn.should_close:
            self._close(abort=False)

    def _send(self, data: bytes) -> bool:
        """Send it all. While the peer does not read, the engine's response data rate decides
        how long to wait (its timer makes ``should_abort`` true). True: sent at once, or the
        connection is closed; False: it waited, and the engine's timers may have run."""
        conn = self.conn
        assert conn is not None
        sock = self.sock
        if self.timeout != 0.0:
            self._set_timeout(0.0)
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(abort=True)
            return True
        if sent == len(data):
            return True
        view = memoryview(data)[sent:]
        blocked = False
        timeout = 0.0
        try:
            while view:
                self._set_timeout(timeout)
                with contextlib.suppress(BlockingIOError, TimeoutError):
                    view = view[sock.send(view) :]
                if not view:
                    break
                now = time.monotonic()
                if not blocked:
                    blocked = True
                    conn.set_write_blocked(True, now, len(view))
                deadline = conn.next_deadline()
                if deadline is not None and now >= deadline:
                    self._handle(conn.on_timer(now))
                    if conn.should_abort:
                        self._close(abort=True)
                        return True
                    deadline = conn.next_deadline()
                timeout = POLL if deadline is None else min(POLL, max(deadline - now, 0.001))
        except OSError:
            self._close(abort=True)
            return True
        if blocked:
            conn.set_write_blocked(False, time.monotonic())
        return not blocked

    def write_file(self, stream: HttpStream, segment: FileSegment) -> None:
        """WsgiFileHost: the file range with ``os.sendfile``, after the bytes before it. Like
        ``_send``, a client that stops reading meets the engine's response data rate."""
        conn = self.conn
        assert conn is not None
        self._flush()  # the head and framing that precede the file
        sock = self.sock
        done = 0
        try:
            self._set_timeout(0.0)
            while done < segment.count and not self.dead:
                try:
                    done += sendfile_some(sock.fileno(), segment, done)
                    continue
                except BlockingIOError:
                    pass
                now = time.monotonic()
                deadline = conn.next_deadline()
                if deadline is not None and now >= deadline:
                    self._handle(conn.on_timer(now))
                    if conn.should_abort:
                        self._close(abort=True)
                        break
                    deadline = conn.next_deadline()
                wait = POLL if deadline is None else min(POLL, max(deadline - now, 0.001))
                select.select([], [sock], [], wait)
        except OSError:
            self._close(abort=True)
        if self.dead or done < segment.count:
            raise ClientDisconnected("the client has disconnected while a file was sent")
        self.server.context.count_sent_file("sendfile", segment.count)

    def _close(self, abort: bool) -> None:
        if self.dead:
            return
        self.dead = True
        self.server.forget(self)
        self._leave_epoll()
        if self.conn is not None:
            self._handle(self.conn.connection_lost(time.monotonic()))
        if abort:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            self.sock.close()
        else:
            self.server.parker.linger(self.sock)

    def _leave_epoll(self) -> None:
        """Before the socket is closed or handed on: its descriptor may be reused at once."""
        if self.in_epoll:
            hub = self.server.hub
            assert hub is not None
            hub.forget(self)

    def poke(self, now: float) -> None:
        """The parker's turn: a timer is due, or the server is stopping."""
        conn = self.conn
        assert conn is not None
        if self.server.stopping and not self.shutdown_sent and self._may_shut_down(now):
            self.shutdown_sent = True
            self._handle(conn.shutdown(now))
            self._flush()
        deadline = conn.next_deadline()
        if not self.dead and deadline is not None and now >= deadline:
            self._handle(conn.on_timer(now))
            self._flush()

    def _may_shut_down(self, now: float) -> bool:
        """Not while bytes the engine has not seen are waiting (a request sent before the stop
        began is answered, with ``Connection: close``), nor in FIRST_REQUEST_GRACE."""
        if not self.received_any and now - self.accepted_at < FIRST_REQUEST_GRACE:
            return False
        if self.eof:
            return True
        try:
            self._set_timeout(0.0)
            return not self.sock.recv(1, socket.MSG_PEEK)
        except OSError:
            return True

    def next_deadline(self) -> float | None:
        """The engine's next deadline, or the end of FIRST_REQUEST_GRACE while stopping."""
        assert self.conn is not None
        deadline = self.conn.next_deadline()
        if self.server.stopping and not self.received_any and not self.shutdown_sent:
            grace_ends = self.accepted_at + FIRST_REQUEST_GRACE
            deadline = grace_ends if deadline is None else min(deadline, grace_ends)
        return deadline

    def interrupt(self) -> None:
        """From another thread (forced shutdown): make blocked ``recv``/``send`` calls fail."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    # -- the app ------------------------------------------------------------------------------

    def _run_next(self) -> None:
        stream = self.pending.popleft()
        if stream.aborted_flag:
            stream.finish()  # reset before its turn came (HTTP/2): no app to run
            self._flush()
            return
        server = self.server
        errors = self.errors
        if errors is None:
            errors = self.errors = WsgiErrors(_log_app_error)
        cycle = WsgiCycle(server.app, stream, self, errors, server.extra)
        try:
            cycle.run()
        except ClientDisconnected:
            log.debug("client went away during %r", stream)
        except Exception:
            log_app_exception("WSGI", stream)
        finally:
            problem = cycle.app_finished(time.monotonic())
            if problem:
                log_app_problem(stream, problem)
            if not self.dead:
                self._flush()

    # WsgiHost: the app runs on this thread, so "call" is a direct call plus a flush.

    def now(self) -> float:
        return time.monotonic()

    def call(self, fn: Callable[[], T]) -> T:
        conn = self.conn
        if self.server.stopping and not self.shutdown_sent and conn is not None and not self.dead:
            # Before the response starts, so it says "Connection: close".
            self.shutdown_sent = True
            self._handle(conn.shutdown(time.monotonic()))
        try:
            return fn()
        finally:
            if not self.dead:
                self._flush()

    def wait_for_body(self, stream: HttpStream) -> None:
        while not (stream.body_buffered or stream.body_complete_flag or stream.aborted_flag):
            if self.dead:
                return
            self._io(block=True)

    def wait_writable(self, stream: HttpStream) -> None:
        while not (stream.can_write or stream.aborted_flag or self.dead):
            self._io(block=True)


class _EpollHub:
    """Linux: the parked connections' sockets in one epoll set that every idle worker polls.

    Each socket is registered one-shot, so readiness goes to exactly one worker and disarms the
    socket until its holder parks it again (``watch`` re-arms it). The queue of new connections
    signals through an eventfd in the same set, level-triggered: readable while the queue is
    not empty, so idle workers wait in one place for both.
    """

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.queue_signal = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.epoll.register(self.queue_signal, select.EPOLLIN)
        self.clients: dict[int, _Client] = {}  # by file descriptor
        self.closed = False

    def watch(self, client: _Client) -> None:
        """By the connection's holder, before it marks it parked: arm its socket."""
        fd = client.fd
        try:
            if client.in_epoll:
                self.epoll.modify(fd, _ARMED)
                return
            self.clients[fd] = client
            client.in_epoll = True
            try:
                self.epoll.register(fd, _ARMED)
            except FileExistsError:  # registered under an earlier connection on this descriptor
                self.epoll.modify(fd, _ARMED)
        except (OSError, ValueError):  # the set was closed: the server is exiting
            pass

    def forget(self, client: _Client) -> None:
        """By the connection's holder, before its socket is closed."""
        client.in_epoll = False
        if self.clients.get(client.fd) is client:
            del self.clients[client.fd]
        with contextlib.suppress(OSError, ValueError):
            self.epoll.unregister(client.fd)

    def signal(self) -> None:
        """Under the server's lock, when the queue stops being empty (or the server exits)."""
        if not self.closed:
            with contextlib.suppress(OSError):
                os.eventfd_write(self.queue_signal, 1)

    def clear(self) -> None:
        """Under the server's lock, when the queue became empty."""
        if not self.closed:
            with contextlib.suppress(OSError):
                os.eventfd_read(self.queue_signal)

    def close(self) -> None:
        """Under the server's lock: a closed descriptor's number may be reused at once."""
        self.closed = True
        self.epoll.close()
        os.close(self.queue_signal)


def epoll_available() -> bool:
    return hasattr(select, "epoll") and hasattr(os, "eventfd")


class _Parker:
    """The timers of parked connections, the stop of the server for them, and lingering closes,
    on one thread of its own. Without an ``_EpollHub`` it also watches the parked connections'
    sockets in a selector and queues those that become readable.

    Each parked connection has at most one timer that matters, ``client.timer_at``: parking
    schedules a timer only when it is earlier than that one, so a busy keep-alive connection
    does not add a heap entry per request. A timer that fires early (the deadline has moved
    since) costs one ``poke`` that finds nothing due and schedules the real one.
    """

    def __init__(self, server: ThreadedServer) -> None:
        self.server = server
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._incoming: list[_Client] = []  # to watch in the selector (no _EpollHub)
        self._incoming_linger: list[socket.socket] = []
        self._exit = False
        self._watched: set[_Client] = set()
        self._timers: list[tuple[float, int, _Client]] = []  # (at, seq, client)
        self._seq = itertools.count()
        # When the thread looks at its timers next at the latest; -inf while it is awake.
        self._wake_at = -math.inf
        self._lingering: deque[tuple[float, socket.socket]] = deque()
        self._stop_seen = False
        self.thread = threading.Thread(target=self._run, name="tiercel-parker", daemon=True)

    # -- from other threads -------------------------------------------------------------------

    def schedule(self, client: _Client, at: float) -> None:
        """A timer for a parked connection (``poke`` at ``at``)."""
        current = client.timer_at
        if current is not None and current <= at:
            # Read without the lock: had this thread popped it meanwhile, it would take the
            # (parked) connection and schedule its timer again.
            return
        with self._lock:
            current = client.timer_at
            if current is not None and current <= at:
                return
            client.timer_at = at
            heapq.heappush(self._timers, (at, next(self._seq), client))
            wake = at < self._wake_at
        if wake:
            self.wake()

    def watch(self, client: _Client) -> None:
        """A parked connection whose socket the selector should watch (no _EpollHub)."""
        with self._lock:
            self._incoming.append(client)
        self.wake()

    def linger(self, sock: socket.socket) -> None:
        """Close gracefully: no more sends, read and drop until the client closes too (or a
        few seconds pass), so the kernel does not reset what we sent last."""
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        with self._lock:
            self._incoming_linger.append(sock)
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._wake_w.send(b"\0")

    def stop(self) -> None:
        with self._lock:
            self._exit = True
        self.wake()
        self.thread.join(5)

    # -- the parker's thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._step():
                pass
        except Exception:
            log.exception("the connection parker failed")
        finally:
            self._cleanup()

    def _step(self) -> bool:
        with self._lock:
            incoming, self._incoming = self._incoming, []
            lingering, self._incoming_linger = self._incoming_linger, []
            leaving = self._exit
            self._wake_at = -math.inf
        now = time.monotonic()
        for sock in lingering:
            sock.setblocking(False)
            try:
                self.selector.register(sock, selectors.EVENT_READ, sock)
            except (OSError, ValueError):
                sock.close()
                continue
            self._lingering.append((now + LINGER_SECONDS, sock))
        for client in incoming:
            # Only this thread claims connections when there is no _EpollHub, so one still
            # parked stays parked until this thread takes it.
            if client.parked and client not in self._watched:
                self.selector.register(client.sock, selectors.EVENT_READ, client)
                self._watched.add(client)
        if leaving:
            return False
        if self.server.stopping and not self._stop_seen:
            self._stop_seen = True
            for client in self.server.clients_snapshot():
                if client.claim():
                    self._service(client, now)
        self._run_timers(now)
        with self._lock:
            timeout = POLL
            if self._timers:
                timeout = min(timeout, max(self._timers[0][0] - now, 0.0))
            if self._lingering:
                timeout = min(timeout, max(self._lingering[0][0] - now, 0.0))
            self._wake_at = now + timeout
        for key, _ in self.selector.select(timeout):
            data = key.data
            if data is None:
                with contextlib.suppress(OSError):
                    while self._wake_r.recv(4096):
                        pass
            elif isinstance(data, _Client):
                self._unwatch(data)
                if data.claim():
                    self.server.dispatch(data)
            else:
                self._drain(data)
        return True

    def _unwatch(self, client: _Client) -> None:
        if client in self._watched:
            self._watched.discard(client)
            self.selector.unregister(client.sock)

    def _service(self, client: _Client, now: float) -> None:
        """A connection this thread claimed: its timers or its shutdown, then park it again."""
        self._unwatch(client)
        try:
            client.poke(now)
            if client.dead:
                return
            if client.pending or not client.park():
                self.server.dispatch(client)  # a worker takes it from here
        except Exception:
            log.exception("unexpected error in a parked connection's timer; closing it")
            client._close(abort=True)

    def _run_timers(self, now: float) -> None:
        due: list[_Client] = []
        with self._lock:
            timers = self._timers
            while timers and timers[0][0] <= now:
                at, _, client = heapq.heappop(timers)
                if client.timer_at == at:  # else a later parking scheduled an earlier timer
                    client.timer_at = None
                    due.append(client)
        for client in due:
            if client.claim():
                self._service(client, now)
        lingering = self._lingering
        while lingering and lingering[0][0] <= now:
            _, sock = lingering.popleft()
            self._close_lingering(sock)

    def _drain(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_lingering(sock)

    def _close_lingering(self, sock: socket.socket) -> None:
        if sock.fileno() < 0:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(sock)
        sock.close()

    def _cleanup(self) -> None:
        for client in self.server.clients_snapshot():
            if client.claim():
                self._unwatch(client)
                client._close(abort=True)
        while self._lingering:
            self._close_lingering(self._lingering.popleft()[1])
        with self._lock:
            late = self._incoming_linger
            self._incoming_linger = []
        for sock in late:
            sock.close()
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()


class ThreadedServer:
    """Serves a WSGI app with blocking sockets and a pool of threads. ``run()`` blocks with
    signal handling; ``start_serving()``/``stop_serving()`` are for embedding and tests."""

    def __init__(
        self,
        app: Any,
        options: ServerOptions,
        *,
        threads: int | None = None,
        queue_limit: int | None = None,
        epoll: bool | None = None,
    ) -> None:
        """``epoll``: park connections in the shared epoll set (``_EpollHub``); False: in the
        parker's selector, the portable way; None: epoll where there is one (Linux)."""
        self.interface = resolve_interface(app, options.interface, unclear="wsgi")
        if self.interface != "wsgi":
            name = getattr(app, "__qualname__", type(app).__name__)
            raise ConfigError(
                f"the threads adapter runs WSGI apps only, and {name} is an ASGI app; use "
                "--adapter asyncio for it (or --interface wsgi if it really is a WSGI app)"
            )
        self.app: WsgiApp = app
        self.options = options
        self.threads = threads if threads is not None else worker_threads()
        self.queue_limit = queue_limit if queue_limit is not None else default_queue_limit()
        if self.threads < 1 or self.queue_limit < 0:
            raise ConfigError(
                f"threads must be at least 1 and queue_limit at least 0 (got {self.threads} "
                f"and {self.queue_limit})"
            )
        self.context = _LockedContext(
            options.engine,
            LoggingObserver(options.access_log, options.rejection_log_level),
            time.time(),
        )
        self.extra: dict[str, Any] = {"SERVER_SOFTWARE": "tiercel"}
        self.listeners: list[Listener] = []
        self.endpoints: EndpointManager | None = None
        if epoll and not epoll_available():
            raise ConfigError(
                "epoll parking needs Linux (select.epoll and os.eventfd); leave epoll unset"
            )
        self._use_epoll = epoll_available() if epoll is None else epoll
        self.hub: _EpollHub | None = None  # made by start_serving
        self.parker = _Parker(self)
        self.stopping = False
        self._cond = threading.Condition()
        self._queue: deque[_Client] = deque()
        self._busy = 0
        self._saturated = False
        self._last_saturation_log = -SATURATION_LOG_INTERVAL
        self._exiting = False
        self._clients: set[_Client] = set()
        self._threads: list[threading.Thread] = []
        self._acceptors: list[threading.Thread] = []
        self._ticker_stop = threading.Event()
        self._started = False
        self._stopped = False
        self._stop_flag = False  # request_stop(); a plain flag, so signal handlers may set it
        self._force = False
        self._reload_requested = False
        self._rejection_summary_requested = False  # SIGUSR1: log the rejection counts
        # Request delegation: the front's connections to the queues (core/delegation.py).
        self.delegation_sender = QueueSender() if options.engine.delegation is not None else None

    @property
    def addresses(self) -> list[str]:
        return self.context.addresses.addresses

    @property
    def busy_workers(self) -> int:
        return self._busy

    @property
    def waiting(self) -> int:
        return len(self._queue)

    # -- lifecycle ------------------------------------------------------------------------------

    def start_serving(self) -> None:
        """Bind, start the threads and return at once."""
        if self._started:
            return
        self.listeners = bind_endpoints(list(self.options.endpoints))
        try:
            self.endpoints = EndpointManager(self.options, self.listeners)
            self.context.addresses.addresses[:] = [listener.url for listener in self.listeners]
            self.context.tick(time.time())
        except BaseException:
            for listener in self.listeners:
                listener.close()
            raise
        self._started = True
        if self._use_epoll:
            self.hub = _EpollHub()
        self.parker.thread.start()
        work = self._work if self.hub is None else self._work_polling
        for number in range(self.threads):
            self._spawn(work, f"tiercel-worker-{number + 1}", self._threads)
        self._spawn(self._tick, "tiercel-ticker", self._threads)
        for listener in self.listeners:
            listener.sock.settimeout(POLL)
            self._spawn(
                self._accept_loop, f"tiercel-acceptor {listener.url}", self._acceptors, listener
            )

    @staticmethod
    def _spawn(
        target: Callable[..., None], name: str, into: list[threading.Thread], *args: Any
    ) -> None:
        thread = threading.Thread(target=target, name=name, args=args, daemon=True)
        thread.start()
        into.append(thread)

    def request_stop(self) -> None:
        """Ask ``run``/``serve`` to stop gracefully; safe from signal handlers and threads."""
        self._stop_flag = True

    def wait_for_stop_request(self) -> None:
        while not self._stop_flag and not self._stopped:
            time.sleep(0.1)
            if self._rejection_summary_requested:  # SIGUSR1 (run())
                self._rejection_summary_requested = False
                log_rejection_summary(self.context.rejection_counts(), when_none=True)

    def stop_serving(self) -> None:
        """Graceful stop: stop accepting, let in-flight requests finish (up to the shutdown
        timeout; a forced stop or the timeout resets what is left), then end every thread."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        self.stopping = True
        for listener in self.listeners:
            if listener.inherited_fd is not None:
                continue  # shared with other processes: shutdown() would stop it for them too
            with contextlib.suppress(OSError):
                listener.sock.shutdown(socket.SHUT_RD)  # Linux: wakes a blocked accept() now
        for thread in self._acceptors:
            thread.join()
        for listener in self.listeners:
            listener.close()  # also removes unix socket files
        self.parker.wake()  # idle connections close at once
        deadline = time.monotonic() + self.options.shutdown_timeout
        while self._clients and time.monotonic() < deadline and not self._force:
            time.sleep(0.02)
        with self._cond:
            remaining = list(self._clients)
        if remaining:
            if self._force:
                log.warning("forced shutdown: aborting %d connection(s)", len(remaining))
            else:
                log.warning(
                    "shutdown timeout (%gs): aborting %d connection(s)",
                    self.options.shutdown_timeout,
                    len(remaining),
                )
            for client in remaining:
                client.interrupt()
        with self._cond:
            self._exiting = True
            self._cond.notify_all()
            if self.hub is not None:
                self.hub.signal()  # wakes every polling worker: the eventfd stays readable
        self._ticker_stop.set()
        give_up = time.monotonic() + 2.0
        for thread in self._threads:
            thread.join(max(give_up - time.monotonic(), 0.0))
        self.parker.stop()
        if self.hub is not None:
            with self._cond:
                self.hub.close()
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning("%d worker thread(s) still inside the app; leaving them", len(stuck))
        self._stop_flag = True

    def run(self, on_started: Callable[[list[str]], None] | None = None) -> None:
        """Serve until SIGINT or SIGTERM, then stop gracefully; a second signal forces the stop.
        SIGHUP reloads the certificates."""
        signals_seen = 0

        def on_signal(signum: int, frame: Any) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen == 1:
                self._stop_flag = True
            else:
                self._force = True

        def on_hangup(signum: int, frame: Any) -> None:
            self._reload_requested = True

        def on_rejection_summary_signal(signum: int, frame: Any) -> None:
            # Logged by wait_for_stop_request: a handler that logs could interleave with a
            # record the main thread is writing.
            self._rejection_summary_requested = True

        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
            if hasattr(signal, "SIGHUP"):
                previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
            if hasattr(signal, "SIGUSR1"):
                usr1 = signal.SIGUSR1
                previous[usr1] = signal.signal(usr1, on_rejection_summary_signal)
        try:
            self.start_serving()
            if on_started is not None:
                on_started(self.addresses)
            self.wait_for_stop_request()
            if signals_seen:
                log.info("shutting down (finishing requests in flight; signal again to force)")
            self.stop_serving()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # The asynchronous API of tiercel.apps.hosting.Server, for callers that have an event loop.

    async def start(self) -> None:
        self.start_serving()

    async def stop(self) -> None:
        import anyio.to_thread

        await anyio.to_thread.run_sync(self.stop_serving, abandon_on_cancel=True)

    async def serve(self) -> None:
        await self.start()
        await self.serve_started()

    async def serve_started(self) -> None:
        import anyio.to_thread

        await anyio.to_thread.run_sync(self.wait_for_stop_request, abandon_on_cancel=True)
        await self.stop()

    # -- threads ------------------------------------------------------------------------------

    def _accept_loop(self, listener: Listener) -> None:
        sock = listener.sock
        while not self.stopping:
            if not _wait_readable(sock) or self.stopping:
                # Checked before accept(): on a socket shared with other processes (tiercel
                # --workers), a connection not taken stays queued for them instead of being
                # accepted and closed by a server that is stopping.
                continue
            try:
                client_sock, remote = sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self.stopping:
                    return
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("cannot accept connections on %s: %s", listener.url, exc)
                    time.sleep(0.1)
                continue
            if listener.is_queue:
                self._read_queue_in_thread(client_sock, listener)
                continue
            self._admit(client_sock, remote, listener)

    def _read_queue_in_thread(self, conn: socket.socket, listener: Listener) -> None:
        """A front connected to our queue: a thread takes its handoffs until it goes away."""
        refusal = peer_refusal(conn)
        if refusal is not None:
            log.warning("%s: refused a delegating process: %s", listener.url, refusal)
            conn.close()
            return

        def adopt(handoff: Handoff, sock: socket.socket) -> None:
            self._admit(sock, handoff.remote_address, listener, handoff)

        threading.Thread(
            target=read_queue_blocking,
            args=(conn, listener.url, adopt, lambda: self.stopping, POLL),
            name=f"tiercel-queue-reader {listener.url}",
            daemon=True,
        ).start()

    def _admit(
        self, sock: socket.socket, remote: Any, listener: Listener, handoff: Handoff | None = None
    ) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self.context.try_open_connection():
            # Over max_concurrent_connections: reset, as the asyncio adapter does.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            sock.close()
            return
        warn = refused = False
        with self._cond:
            waiting = len(self._queue)
            if self.threads - self._busy - waiting <= 0 and waiting >= self.queue_limit:
                refused = True
            else:
                warn = self._must_wait()
                client = _Client(self, sock, listener, remote)
                if handoff is not None:
                    client.handoff = handoff
                self._clients.add(client)
                self._enqueue(client)
        if warn:
            self._warn_saturated(waiting + 1)
        if refused:
            self.context.connection_closed()
            self._refuse(sock, remote, listener, waiting)

    def _refuse(self, sock: socket.socket, remote: Any, listener: Listener, waiting: int) -> None:
        message = (
            f"all {self.threads} worker threads are busy and {waiting} connection(s) are "
            f"waiting (queue limit {self.queue_limit})"
        )
        self.context.record_rejection(
            Rejection(
                status=503,
                reason="server_busy",
                message=message,
                remote_address=(remote[0], remote[1]) if isinstance(remote, tuple) else None,
                connection_id="-",
            )
        )
        if listener.settings.tls is not None:
            # A plain-text answer means nothing before a TLS handshake: reset instead.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            sock.close()
            return
        answer = error_response(
            503,
            "the server is busy; try again shortly",
            self.context,
            [(b"retry-after", RETRY_AFTER)],
        )
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.send(answer)  # a fresh socket's send buffer takes it whole
        self.parker.linger(sock)

    def dispatch(self, client: _Client) -> None:
        """Queue a parked connection that has work again (never refused)."""
        with self._cond:
            warn = self._must_wait()
            self._enqueue(client)
            waiting = len(self._queue)
        if warn:
            self._warn_saturated(waiting)

    def _enqueue(self, client: _Client) -> None:
        """Under the lock: wake a worker for it."""
        self._queue.append(client)
        if self.hub is None:
            self._cond.notify()
        elif len(self._queue) == 1:
            self.hub.signal()

    def _must_wait(self) -> bool:
        """Under the lock, before queueing: whether a saturation episode begins that should be
        logged (no worker is free; once per episode, and not more often than every 10 s)."""
        if self.threads - self._busy - len(self._queue) > 0 or self._saturated:
            return False
        self._saturated = True
        now = time.monotonic()
        if now - self._last_saturation_log < SATURATION_LOG_INTERVAL:
            return False
        self._last_saturation_log = now
        return True

    def _warn_saturated(self, waiting: int) -> None:
        log.warning(
            "all %d worker threads are busy; %d connection(s) waiting (queue limit %d)",
            self.threads,
            waiting,
            self.queue_limit,
        )

    def forget(self, client: _Client) -> None:
        with self._cond:
            self._clients.discard(client)
        self.context.connection_closed()

    def clients_snapshot(self) -> list[_Client]:
        with self._cond:
            return list(self._clients)

    def _take(self) -> _Client | None:
        with self._cond:
            while not self._queue:
                if self._exiting:
                    return None
                self._cond.wait()
            self._busy += 1
            return self._queue.popleft()

    def _work(self) -> None:
        """A worker without an _EpollHub: connections come from the queue only."""
        while (client := self._take()) is not None:
            self._serve(client)

    def _work_polling(self) -> None:
        """A worker with an _EpollHub: it waits in the epoll set for a readable parked
        connection (claimed and served here, no other thread involved) or for the queue."""
        hub = self.hub
        assert hub is not None
        poll = hub.epoll.poll
        queue_signal = hub.queue_signal
        by_fd = hub.clients
        cond = self._cond
        while not self._exiting:
            try:
                ready = poll(POLL, 1)
            except (OSError, ValueError):  # closed: the server has exited
                return
            if not ready:
                continue
            fd = ready[0][0]
            if fd == queue_signal:
                client = self._take_queued()
                if client is None:
                    continue
            else:
                client = by_fd.get(fd)
                if client is None or not client.claim():
                    continue
                with cond:
                    self._busy += 1
            self._serve(client)

    def _take_queued(self) -> _Client | None:
        """With an _EpollHub: the first queued connection, if another worker did not take it."""
        hub = self.hub
        assert hub is not None
        with self._cond:
            if not self._queue:
                return None
            client = self._queue.popleft()
            self._busy += 1
            if not self._queue and not self._exiting:
                hub.clear()
            return client

    def _serve(self, client: _Client) -> None:
        """Serve a connection this worker holds until it is parked or closed."""
        try:
            while client.serve() and not client.park():
                pass  # something happened while it was being parked: serve it again
        except BaseException:
            log.exception("unexpected error while serving a connection; closing it")
            client._close(abort=True)
        finally:
            with self._cond:
                self._busy -= 1
                if not self._queue:
                    self._saturated = False  # the episode is over

    def _tick(self) -> None:
        seconds = 0
        while not self._ticker_stop.wait(1.0 - time.time() % 1.0):
            self.context.tick(time.time())
            seconds += 1
            endpoints = self.endpoints
            if endpoints is None:
                continue
            try:
                if self._reload_requested:
                    self._reload_requested = False
                    endpoints.reload_certificates()
                elif seconds % 2 == 0:
                    endpoints.poll()  # certificate files changed: reload them
            except Exception:
                log.exception("reloading the certificates failed")
