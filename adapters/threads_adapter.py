"""The threaded adapter (``--adapter threads``): blocking sockets and a bounded pool of worker
threads, no event loop. Made for WSGI apps, and for places where no event loop may run.

Threads
-------
- **Acceptors**, one per listening socket: ``accept()``, then queue the connection for a worker.
- **Workers**, a fixed pool: a worker takes one connection at a time and drives its engine with
  blocking ``recv``/``send``. When a request arrives it runs the WSGI app inline, so an app that
  blocks holds only its own worker. ``wsgi.input`` reads the socket as the app asks for bytes.
- **The parker**: a connection with no request in flight and nothing to read gives its worker
  back and waits in a ``selectors`` selector (as cheroot and waitress do), so idle keep-alive
  connections cost no thread. Bytes arriving put it back in the queue. Meanwhile the parker
  applies the engine's timers (keep-alive, request headers) and does lingering closes.
- **The ticker**: the Date header once a second, certificate files every two seconds.

The engine is not thread-safe: a connection's engine is touched only by the one thread that
holds the connection (the queue, a worker and the parker hand it over), and the server-wide
counters in ``ServerContext`` are guarded by a lock.

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
from collections.abc import Callable
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

    def __init__(
        self, server: ThreadedServer, sock: socket.socket, listener: Listener, remote: Any
    ) -> None:
        self.server = server
        self.sock = sock
        self.listener = listener
        self.remote = (remote[0], remote[1]) if isinstance(remote, tuple) else None
        self.conn: EngineConnection | None = None
        self.pending: deque[HttpStream] = deque()  # requests whose app has not run yet
        self.dead = False
        self.eof = False
        self.shutdown_sent = False
        self.park_token = 0  # the parker's timers for an earlier parking are stale
        self.accepted_at = time.monotonic()
        self.received_any = False

    # -- the worker's loop --------------------------------------------------------------------

    def serve(self) -> bool:
        """Serve until nothing is left to do right now. True: park me. False: closed."""
        conn = self.conn
        if conn is None:
            conn = self.conn = self._open()
            if self.handoff is not None:
                self._feed_handoff(conn, self.handoff)
        while not self.dead:
            self._handle(conn.pop_events())
            if self.pending:
                self._run_next()
            elif not self._io(block=False):
                return True
        while self.pending:  # the connection died with requests whose app never ran
            self.pending.popleft().finish()
        return False

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
        sock = self.sock
        try:
            sock.settimeout(wait if block else 0.0)
            data = sock.recv(RECV_SIZE)
        except (BlockingIOError, TimeoutError):
            return block
        except OSError:
            self._close(abort=True)
            return True
        if not data:
            self.eof = True
        self.received_any = True
        self._handle(conn.receive_data(data, time.monotonic()))
        self._flush()
        return True

    def _handle(self, events: list[Event]) -> None:
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
        self.sock.close()  # a plain close(2): neither FIN nor RST while the receiver has it

    def _flush(self) -> None:
        """Send what the engine produced; close when it says so."""
        conn = self.conn
        assert conn is not None
        while not self.dead:
            self._handle(conn.pop_events())
            if conn.should_abort:
                self._close(abort=True)
                return
            data = conn.data_to_send()
            if not data:
                break
            self._send(data)
        if not self.dead and conn.should_close:
            self._close(abort=False)

    def _send(self, data: bytes) -> None:
        """Send it all. While the peer does not read, the engine's response data rate decides
        how long to wait (its timer makes ``should_abort`` true)."""
        conn = self.conn
        assert conn is not None
        sock = self.sock
        view = memoryview(data)
        blocked = False
        timeout = 0.0
        try:
            while view:
                sock.settimeout(timeout)
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
                        return
                    deadline = conn.next_deadline()
                timeout = POLL if deadline is None else min(POLL, max(deadline - now, 0.001))
        except OSError:
            self._close(abort=True)
            return
        if blocked:
            conn.set_write_blocked(False, time.monotonic())

    def write_file(self, stream: HttpStream, segment: FileSegment) -> None:
        """WsgiFileHost: the file range with ``os.sendfile``, after the bytes before it. Like
        ``_send``, a client that stops reading meets the engine's response data rate."""
        conn = self.conn
        assert conn is not None
        self._flush()  # the head and framing that precede the file
        sock = self.sock
        done = 0
        try:
            sock.settimeout(0.0)
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
        if self.conn is not None:
            self._handle(self.conn.connection_lost(time.monotonic()))
        if abort:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            self.sock.close()
        else:
            self.server.parker.linger(self.sock)

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
            self.sock.settimeout(0.0)
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
        cycle = WsgiCycle(server.app, stream, self, WsgiErrors(_log_app_error), server.extra)
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


class _Parker:
    """Holds connections that wait for bytes, in a selector on one thread of its own."""

    def __init__(self, server: ThreadedServer) -> None:
        self.server = server
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._incoming: list[_Client] = []
        self._incoming_linger: list[socket.socket] = []
        self._exit = False
        self._parked: set[_Client] = set()
        self._watched: set[_Client] = set()
        self._timers: list[tuple[float, int, int, _Client]] = []  # (at, token, seq, client)
        self._seq = itertools.count()
        self._lingering: deque[tuple[float, socket.socket]] = deque()
        self._stop_seen = False
        self.thread = threading.Thread(target=self._run, name="tiercel-parker", daemon=True)

    # -- from other threads -------------------------------------------------------------------

    def park(self, client: _Client) -> None:
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
            self._parked.add(client)
            self._watch(client)
        if leaving:
            return False
        if self.server.stopping and (not self._stop_seen or incoming):
            self._stop_seen = True
            for client in list(self._parked):
                if not client.shutdown_sent:
                    self._service(client, now)
        self._run_timers(now)
        timeout = POLL
        if self._timers:
            timeout = min(timeout, max(self._timers[0][0] - now, 0.0))
        if self._lingering:
            timeout = min(timeout, max(self._lingering[0][0] - now, 0.0))
        for key, _ in self.selector.select(timeout):
            data = key.data
            if data is None:
                with contextlib.suppress(OSError):
                    while self._wake_r.recv(4096):
                        pass
            elif isinstance(data, _Client):
                self._unwatch(data)
                self._parked.discard(data)
                self.server.dispatch(data)
            else:
                self._drain(data)
        return True

    def _watch(self, client: _Client) -> None:
        conn = client.conn
        assert conn is not None
        client.park_token += 1
        if conn.wants_read and not client.eof:
            self.selector.register(client.sock, selectors.EVENT_READ, client)
            self._watched.add(client)
        deadline = client.next_deadline()
        if deadline is not None:
            heapq.heappush(self._timers, (deadline, client.park_token, next(self._seq), client))

    def _unwatch(self, client: _Client) -> None:
        if client in self._watched:
            self._watched.discard(client)
            self.selector.unregister(client.sock)

    def _service(self, client: _Client, now: float) -> None:
        self._unwatch(client)
        try:
            client.poke(now)
        except Exception:
            log.exception("unexpected error in a parked connection's timer; closing it")
            client._close(abort=True)
        if client.dead:
            self._parked.discard(client)
        elif client.pending:
            self._parked.discard(client)
            self.server.dispatch(client)
        else:
            self._watch(client)

    def _run_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, token, _, client = heapq.heappop(timers)
            if client in self._parked and token == client.park_token:
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
        for client in list(self._parked):
            self._unwatch(client)
            client._close(abort=True)
        self._parked.clear()
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
    ) -> None:
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
        self.parker.thread.start()
        for number in range(self.threads):
            self._spawn(self._work, f"tiercel-worker-{number + 1}", self._threads)
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
        self._ticker_stop.set()
        give_up = time.monotonic() + 2.0
        for thread in self._threads:
            thread.join(max(give_up - time.monotonic(), 0.0))
        self.parker.stop()
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
                self._queue.append(client)
                self._cond.notify()
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
            self._queue.append(client)
            waiting = len(self._queue)
            self._cond.notify()
        if warn:
            self._warn_saturated(waiting)

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

    def _take(self) -> _Client | None:
        with self._cond:
            while not self._queue:
                if self._exiting:
                    return None
                self._cond.wait()
            self._busy += 1
            return self._queue.popleft()

    def _work(self) -> None:
        while (client := self._take()) is not None:
            park = False
            try:
                park = client.serve()
            except BaseException:
                log.exception("unexpected error while serving a connection; closing it")
                client._close(abort=True)
            finally:
                with self._cond:
                    self._busy -= 1
                    if not self._queue:
                        self._saturated = False  # the episode is over
            if park:
                self.parker.park(client)

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
