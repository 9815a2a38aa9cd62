"""The trio adapter: sockets and time in, engine calls out.

Each connection runs three I/O tasks in its own cancel scope, plus its apps:

- the reader calls ``receive_some`` only while the engine ``wants_read`` and feeds the bytes in;
- the writer is the only task that calls ``send_all``: every engine call is followed by
  ``_sync``, which queues what the engine produced and wakes the writer. While more than
  ``HIGH_WATER`` bytes wait to be written the engine is told the transport is blocked and the
  apps' ``send`` waits;
- the timer sleeps in a cancel scope whose deadline ``_sync`` moves to the engine's
  ``next_deadline()``, so no task is created per re-arm.

``should_close`` lets the writer flush and then closes; ``should_abort`` cancels the I/O tasks
and resets the socket. Apps run as one task per request in the connection's nursery; their
``receive``/``send`` are the engine's ASGI translation plus waiting for ``StreamUpdated``.
WSGI apps run on worker threads (``trio.to_thread``) and reach the engine through
``trio.from_thread`` (``_WsgiHost``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import signal
import socket
import struct
import time
from collections.abc import Callable, Coroutine, Iterator
from functools import partial
from typing import Any, TypeVar

import trio
from tiercel.apps.endpoints import EndpointManager
from tiercel.apps.lifespan import Lifespan
from tiercel.apps.loader import resolve_interface
from tiercel.apps.logs import (
    LoggingObserver,
    log_app_exception,
    log_app_problem,
    log_rejection_summary,
)
from tiercel.apps.options import ServerOptions
from tiercel.core.asgi import (
    ADDRESSES_EXTENSION,
    FILE_EXTENSIONS,
    INFORMATIONAL_EXTENSION,
    AsgiHttpCycle,
    http_scope,
)
from tiercel.core.connection import EngineConnection, open_connection
from tiercel.core.context import ServerContext, TransportInfo
from tiercel.core.delegation import Handoff
from tiercel.core.events import ConnectionDelegated, Event, RequestReceived
from tiercel.core.files import FileSegment
from tiercel.core.stream import ClientDisconnected, HttpStream
from tiercel.core.wsgi import WsgiCycle, WsgiErrors

from .delegation import DelegationFailed, QueueSender, serve_queue_trio
from .files import OpenedFile, send_file_body, sendfile_some, write_file_through_stream
from .sockets import FIRST_REQUEST_GRACE, Listener, bind_endpoints

log = logging.getLogger("tiercel.error")

T = TypeVar("T")

RECEIVE_SIZE = 65_536
HIGH_WATER = 65_536  # unwritten bytes above which the connection counts as write-blocked
LINGER_SECONDS = 2.0  # after our FIN, how long to read and discard before closing for good
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_ACCEPT_RETRY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


def _address(value: Any) -> Any:
    return (value[0], value[1]) if isinstance(value, tuple) else None


class _Connection:
    _handoff_data = b""  # a connection delegated to our queue: the bytes its front read

    def __init__(
        self,
        server: TrioServer,
        stream: trio.SocketStream,
        listener: Listener,
        handoff: Handoff | None = None,
    ) -> None:
        self._server = server
        self._stream = stream
        sock = stream.socket
        if handoff is not None:  # addresses as the front saw them (perhaps a PROXY header's)
            self._handoff_data = handoff.data
            info = TransportInfo(
                local_address=handoff.local_address,
                remote_address=handoff.remote_address,
                sendfile=True,
            )
        else:
            local = sock.getsockname()
            info = TransportInfo(
                local_address=_address(local) or (local or None),
                remote_address=_address(sock.getpeername()),
                sendfile=True,  # _write_file_job
            )
        self.conn: EngineConnection = open_connection(
            server.context, info, trio.current_time(), listener.settings
        )
        self._io = trio.CancelScope()
        self._apps: trio.Nursery | None = None
        self._timer: trio.CancelScope | None = None
        self._pending: list[bytes] = []
        self._unsent = 0
        self._write_blocked = False
        self._closing = False  # the engine said close: flush, then close
        self._aborting = False  # the engine said abort (or the peer is gone): reset now
        self._closed = False  # the socket is closed and the engine told so
        self._peer_done = trio.Event()  # end of input (or an error) seen by the reader
        self._input_seen = trio.Event()  # bytes, end of input or an error: FIRST_REQUEST_GRACE
        self._grace_started = False
        self._writable = trio.lowlevel.ParkingLot()  # the writer waits here for bytes
        self._readable = trio.lowlevel.ParkingLot()  # the reader waits here for wants_read
        self._drained = trio.lowlevel.ParkingLot()  # apps' send waits here while blocked
        self._waiters: dict[HttpStream, trio.Event] = {}
        # A file range for the writer to send raw once the bytes before it are out, and the
        # event set when it has (or the connection is gone).
        self._file_job: tuple[FileSegment, trio.Event] | None = None

    async def run(self) -> None:
        server = self._server
        server.connections.add(self)
        try:
            async with trio.open_nursery() as apps:
                self._apps = apps
                try:
                    if server.stopping:
                        self.shutdown()
                    if self._handoff_data:
                        self._feed_handoff()
                    self._sync()
                    with self._io:
                        async with trio.open_nursery() as io:
                            io.start_soon(self._read)
                            io.start_soon(self._time)
                            await self._write()
                            io.cancel_scope.cancel()
                except* Exception:
                    self._internal_error()
                finally:
                    self._close_socket()  # the apps still running see the connection gone
        except* Exception:  # raised by the engine after the socket closed
            self._internal_error()

    def _internal_error(self) -> None:
        log.exception("internal error on connection %s; closing it", self.conn.connection_id)
        self._aborting = True

    # -- engine plumbing --------------------------------------------------------------------

    def _sync(self) -> None:
        """Act on the engine's state after every call into it."""
        if self._closed or self._aborting:
            return
        conn = self.conn
        events = conn.pop_events()
        if events:
            self._dispatch(events)
        if conn.should_abort:
            self.abort()
            return
        data = conn.data_to_send()
        if data:
            self._pending.append(data)
            self._unsent += len(data)
            self._writable.unpark_all()
            if not self._write_blocked and self._unsent > HIGH_WATER:
                self._write_blocked = True
                conn.set_write_blocked(True, trio.current_time(), self._unsent)
        if conn.should_close and not self._closing:
            self._closing = True
            self._writable.unpark_all()
            self._readable.unpark_all()
        elif conn.wants_read:
            self._readable.unpark_all()
        timer = self._timer
        if timer is not None:
            deadline = conn.next_deadline()
            if deadline is None:
                deadline = math.inf
            if timer.deadline != deadline:
                timer.deadline = deadline

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if type(event) is RequestReceived:
                assert self._apps is not None
                run = self._run_wsgi if self._server.wsgi_threads else self._run_asgi
                self._apps.start_soon(run, event.stream)
            elif type(event) is ConnectionDelegated:
                self._hand_off(event)
            else:
                waiter = self._waiters.pop(event.stream, None)
                if waiter is not None:
                    waiter.set()

    def _feed_handoff(self) -> None:
        """The bytes the delegating front read go to the engine before any from the socket."""
        self._input_seen.set()
        self._dispatch(self.conn.receive_data(self._handoff_data, trio.current_time()))

    def _hand_off(self, event: ConnectionDelegated) -> None:
        """Request delegation: the socket goes to the queue's server; closing ours then sends
        nothing. On failure the engine has a 503 for ``_sync`` to send."""
        sender = self._server.delegation_sender
        try:
            if sender is None:
                raise DelegationFailed("this server has no delegation rules")
            sender.send(event.queue, event.handoff, self._stream.socket.fileno())
        except DelegationFailed as exc:
            event.refuse(str(exc))  # the engine logs it as a rejection
            return
        self._close_socket()  # a plain close(2): neither FIN nor RST while the receiver has it
        self._io.cancel()

    async def _read(self) -> None:
        conn = self.conn
        receive_some = self._stream.receive_some
        while True:
            while not (self._closing or conn.wants_read):
                await self._readable.park()
            try:
                data = await receive_some(RECEIVE_SIZE)
            except _GONE:
                self._input_seen.set()
                self._peer_done.set()
                if not self._closing:
                    self.abort()
                return
            if not data:
                self._peer_done.set()
            if self._closing:
                # The engine takes no more input: read and discard until the peer is done
                # too, so that closing sends no reset that could destroy our last response.
                if not data:
                    return
                continue
            self._dispatch(conn.receive_data(data, trio.current_time()))
            self._sync()
            self._input_seen.set()
            if not data:
                return  # end of input; the engine decides when to close

    async def _write(self) -> None:
        send_all = self._stream.send_all
        pending = self._pending
        while True:
            if not pending and self._file_job is not None:
                if not await self._write_file_job(*self._file_job):
                    return
                continue
            if not pending:
                if self._closing:  # lingering close: FIN, then wait for the peer's (bounded)
                    with contextlib.suppress(*_GONE):
                        await self._stream.send_eof()
                    with trio.move_on_after(LINGER_SECONDS):
                        await self._peer_done.wait()
                    return
                await self._writable.park()
                continue
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            try:
                await send_all(data)
            except _GONE:
                self.abort()
                return
            self._unsent -= len(data)
            if self._write_blocked and self._unsent <= HIGH_WATER:
                self._write_blocked = False
                self.conn.set_write_blocked(False, trio.current_time())
                self._drained.unpark_all()
                self._sync()

    async def _write_file_job(self, segment: FileSegment, done: trio.Event) -> bool:
        """The writer's part of direct file transmission: ``os.sendfile`` whenever the socket
        is writable. False when the connection failed."""
        sock = self._stream.socket
        sent = 0
        try:
            while sent < segment.count:
                await trio.lowlevel.wait_writable(sock)
                with contextlib.suppress(BlockingIOError):
                    sent += sendfile_some(sock.fileno(), segment, sent)
        except _GONE:
            self.abort()
            return False
        finally:
            self._file_job = None
            done.set()
        counters = self._server.context.file_counters
        counters["sendfile_files"] += 1
        counters["sendfile_bytes"] += segment.count
        return True

    async def hand_file_to_writer(self, segment: FileSegment) -> None:
        """Hand a file range to the writer, after the bytes already queued; wait until sent."""
        if self._closed or self._aborting:
            raise ClientDisconnected("the client has disconnected")
        done = trio.Event()
        self._file_job = (segment, done)
        self._writable.unpark_all()
        await done.wait()

    async def _send_opened_file(self, stream: HttpStream, opened: OpenedFile, end: bool) -> None:
        """A pathsend/zerocopysend range (core/files.py): the writer sends it raw where the
        engine allows it, else it is read in pieces and written through the engine."""
        now = trio.current_time
        if stream.can_transmit_file:
            stream.transmit_file(opened.segment, end, now())
            if not stream.transmitting_file:
                self._sync()
                return
            self._sync()  # the head and framing go first; the writer then sends the file
            await self.hand_file_to_writer(opened.segment)
            if not (stream.aborted_flag or self._closed):
                stream.file_transmitted(now())
            self._sync()
            return
        counters = self._server.context.file_counters
        counters["read_loop_files"] += 1
        counters["read_loop_bytes"] += opened.count
        await write_file_through_stream(
            stream, opened, end, now=now, until_writable=self._until_writable, flush=self._sync
        )

    async def _time(self) -> None:
        conn = self.conn
        while True:
            deadline = conn.next_deadline()
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as timer:
                self._timer = timer
                await trio.sleep_forever()
            self._timer = None
            # Never hand the engine a time before the deadline it asked for.
            self._dispatch(conn.on_timer(max(trio.current_time(), timer.deadline)))
            self._sync()

    def _close_socket(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._input_seen.set()  # nothing more will come: a FIRST_REQUEST_GRACE wait ends
        if self._aborting:
            _reset(self._stream.socket)
        else:
            self._stream.socket.close()
        server = self._server
        server.connections.discard(self)
        server.context.connection_closed()
        server.connection_gone.unpark_all()
        if self._file_job is not None:
            self._file_job[1].set()  # the writer is gone: the app stops waiting for the file
        try:
            self._dispatch(self.conn.connection_lost(trio.current_time()))
        finally:
            for waiter in self._waiters.values():
                waiter.set()
            self._waiters.clear()
            self._drained.unpark_all()

    def shutdown(self) -> None:
        if self._apps is None:
            return  # run() has not begun; it sees server.stopping and comes back here
        if not self._input_seen.is_set():
            if not self._grace_started:
                self._grace_started = True
                self._apps.start_soon(self._shutdown_after_grace)
            return
        self._shutdown_now()

    async def _shutdown_after_grace(self) -> None:
        with trio.move_on_after(FIRST_REQUEST_GRACE):
            await self._input_seen.wait()
        self._shutdown_now()

    def _shutdown_now(self) -> None:
        if not self._closed:
            self._dispatch(self.conn.shutdown(trio.current_time()))
            self._sync()

    def abort(self) -> None:
        """Reset the connection now (the engine's ``should_abort``, or a forced stop)."""
        if not self._closed:
            self._aborting = True
            self._io.cancel()

    # -- the app's side ---------------------------------------------------------------------

    async def _wait(self, stream: HttpStream) -> None:
        waiter = self._waiters.get(stream)
        if waiter is None:
            waiter = self._waiters[stream] = trio.Event()
        await waiter.wait()

    async def _until_writable(self, stream: HttpStream) -> None:
        """Wait while the socket is behind (write-blocked) or the stream's own buffer is full
        (HTTP/2 flow control)."""
        if self._aborting:
            # The socket failed and is being torn down; let that run (it aborts the stream, so
            # the next send raises ClientDisconnected) instead of spinning without a checkpoint.
            await trio.lowlevel.checkpoint()
        while not self._closed:
            if self._write_blocked:
                await self._drained.park()
            elif not stream.can_write:
                await self._wait(stream)
            else:
                return

    async def _run_asgi(self, stream: HttpStream) -> None:
        server = self._server
        cycle = AsgiHttpCycle(stream)
        scope = http_scope(stream, server.lifespan_state, server.extensions)
        now = trio.current_time

        async def receive() -> Any:
            while True:
                message = cycle.receive(now())
                self._sync()
                if message is not None:
                    return message
                await self._wait(stream)

        async def send(message: Any) -> None:
            await self._until_writable(stream)
            try:
                cycle.send(message, now())
            finally:
                self._sync()
            if cycle.pending_file is not None:
                await send_file_body(cycle, self._send_opened_file)

        try:
            await server.app(scope, receive, send)
        except ClientDisconnected:
            log.debug("client went away during %r", stream)
        except Exception:
            log_app_exception("ASGI", stream)
        finally:
            self._app_finished(stream, cycle.app_finished(now()))

    async def _run_wsgi(self, stream: HttpStream) -> None:
        server = self._server
        host = _WsgiHost(self, stream)
        errors = WsgiErrors(partial(log.error, "%s"))
        cycle = WsgiCycle(server.app, stream, host, errors, {"SERVER_SOFTWARE": "tiercel"})
        try:
            await trio.to_thread.run_sync(
                cycle.run,
                limiter=server.wsgi_threads,
                abandon_on_cancel=True,
                thread_name="tiercel-wsgi",
            )
        except ClientDisconnected:
            log.debug("client went away during %r", stream)
        except Exception:
            log_app_exception("WSGI", stream)
        finally:
            host.closed = True  # a thread abandoned by a forced stop touches nothing more
            self._app_finished(stream, cycle.app_finished(trio.current_time()))

    def _app_finished(self, stream: HttpStream, problem: str | None) -> None:
        if problem:
            log_app_problem(stream, problem)
        self._waiters.pop(stream, None)
        self._sync()


class _WsgiHost:
    """``WsgiHost`` for a WSGI app on a worker thread: each engine operation and each wait
    hops to the trio thread (``trio.from_thread``), because the engine is not thread-safe."""

    def __init__(self, connection: _Connection, stream: HttpStream) -> None:
        self._connection = connection
        self._stream = stream
        self._writable = True  # as of the last operation
        self.closed = False

    def now(self) -> float:
        return trio.current_time()  # only called inside call(), on the trio thread

    def call(self, fn: Callable[[], T]) -> T:
        connection = self._connection

        def operation() -> T:
            if self.closed:
                raise ClientDisconnected("the request is over")
            try:
                return fn()
            finally:
                connection._sync()
                self._writable = not connection._write_blocked and self._stream.can_write

        result: T = self._hop(trio.from_thread.run_sync, operation)
        return result

    def wait_for_body(self, stream: HttpStream) -> None:
        async def arrived() -> None:
            while not (
                stream.body_buffered or stream.body_complete_flag or stream.aborted_flag
            ) and not (self.closed or self._connection._closed):
                await self._connection._wait(stream)

        self._hop(trio.from_thread.run, arrived)

    def wait_writable(self, stream: HttpStream) -> None:
        if not self._writable:
            self._hop(trio.from_thread.run, self._connection._until_writable, stream)
            self._writable = True

    def write_file(self, stream: HttpStream, segment: FileSegment) -> None:
        """WsgiFileHost: the writer sends the range with os.sendfile; this thread waits."""
        connection = self._connection
        self._hop(trio.from_thread.run, connection.hand_file_to_writer, segment)
        if connection._closed or stream.aborted_flag:
            raise ClientDisconnected("the client has disconnected while a file was sent")

    def _hop(self, via: Callable[..., Any], fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return via(fn, *args)
        except (trio.RunFinishedError, trio.Cancelled):
            raise ClientDisconnected("the server has stopped") from None


class TrioServer:
    def __init__(self, app: Any, options: ServerOptions) -> None:
        """``app`` is an ASGI app, or a WSGI one (``options.interface``, or detected)."""
        self.app = app
        self.options = options
        self.context = ServerContext(
            options.engine,
            LoggingObserver(options.access_log, options.rejection_log_level),
            time.time(),
        )
        self.connections: set[_Connection] = set()
        self.connection_gone = trio.lowlevel.ParkingLot()
        self.listeners: list[Listener] = []
        self.extensions: dict[str, Any] = {}
        self.interface = resolve_interface(app, options.interface)
        # WSGI apps run on worker threads, at most this many at once; they have no lifespan.
        self.wsgi_threads: trio.CapacityLimiter | None = None
        if self.interface == "wsgi":
            from .threads_adapter import worker_threads

            self.wsgi_threads = trio.CapacityLimiter(worker_threads())
        lifespan = "off" if self.interface == "wsgi" else options.lifespan
        self.lifespan = Lifespan(app, lifespan, self.extensions)
        self.lifespan_state: dict[str, Any] | None = None
        self.endpoints: EndpointManager | None = None
        self.stopping = False
        self._stop_requested: trio.Event | None = None
        self._accepting = trio.CancelScope()
        # Request delegation: the front's connections to the queues (core/delegation.py).
        self.delegation_sender = QueueSender() if options.engine.delegation is not None else None

    @property
    def addresses(self) -> list[str]:
        return self.context.addresses.addresses

    def request_stop(self) -> None:
        """Ask ``serve`` to stop gracefully; call it from the trio thread."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def serve(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind, run the lifespan startup, accept until ``request_stop``, then stop gracefully.
        ``task_status.started`` reports the bound addresses."""
        self._stop_requested = trio.Event()
        self.listeners = bind_endpoints(list(self.options.endpoints))
        try:
            with _plain_errors():
                await self._serve(task_status)
        finally:
            for listener in self.listeners:
                listener.close()

    async def _serve(self, task_status: trio.TaskStatus[list[str]]) -> None:
        assert self._stop_requested is not None
        self.endpoints = EndpointManager(self.options, self.listeners)
        addresses = [listener.url for listener in self.listeners]
        self.context.addresses.addresses[:] = addresses
        self.extensions[ADDRESSES_EXTENSION] = {"addresses": addresses}
        self.extensions[INFORMATIONAL_EXTENSION] = {}
        self.extensions.update(FILE_EXTENSIONS)
        async with trio.open_nursery() as background:  # the lifespan task and the ticker

            def spawn(fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
                background.start_soon(fn, *args)

            await self.lifespan.startup(spawn)
            self.lifespan_state = self.lifespan.state if self.lifespan.mode != "off" else None
            background.start_soon(self._tick)
            sockets = [trio.socket.from_stdlib_socket(lis.sock) for lis in self.listeners]
            async with trio.open_nursery() as connections:
                connections.start_soon(self._accept_all, sockets, connections)
                task_status.started(list(addresses))
                await self._stop_requested.wait()
                await self._stop(connections)
            await self.lifespan.shutdown()
            background.cancel_scope.cancel()

    async def _accept_all(
        self, sockets: list[trio.socket.SocketType], connections: trio.Nursery
    ) -> None:
        try:
            with self._accepting:
                async with trio.open_nursery() as acceptors:
                    for listener, sock in zip(self.listeners, sockets, strict=True):
                        if listener.is_queue:
                            adopt = partial(self._adopt_handoff, listener, connections)
                            acceptors.start_soon(serve_queue_trio, sock, listener.url, adopt)
                            continue
                        acceptors.start_soon(self._accept, sock, listener, connections)
        finally:
            for sock in sockets:
                sock.close()  # refuse new connections from now on

    async def _accept(
        self, sock: trio.socket.SocketType, listener: Listener, connections: trio.Nursery
    ) -> None:
        sockets = trio.SocketListener(sock)
        while True:
            try:
                stream = await sockets.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY:
                    raise
                log.error("accept failed: %s; retrying in 0.1 s", exc)
                await trio.sleep(0.1)
                continue
            if not self.context.try_open_connection():
                _reset(stream.socket)  # over max_concurrent_connections
                continue
            try:
                connection = _Connection(self, stream, listener)
            except Exception as exc:
                if not isinstance(exc, OSError):  # OSError: the peer left already
                    log.exception("cannot serve a new connection")
                self.context.connection_closed()
                stream.socket.close()
                continue
            self.connections.add(connection)  # now: a stop beginning before run() waits for it
            connections.start_soon(connection.run)

    async def _adopt_handoff(
        self, listener: Listener, connections: trio.Nursery, handoff: Handoff, sock: socket.socket
    ) -> None:
        """A connection delegated to our queue: served like one we accepted."""
        if not self.context.try_open_connection():
            _reset(trio.socket.from_stdlib_socket(sock))  # over max_concurrent_connections
            return
        try:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            connection = _Connection(self, stream, listener, handoff)
        except Exception:
            log.exception("cannot serve a delegated connection")
            self.context.connection_closed()
            sock.close()
            return
        self.connections.add(connection)
        connections.start_soon(connection.run)

    async def _stop(self, connections: trio.Nursery) -> None:
        """Stop accepting, let requests in flight finish (up to the shutdown timeout), abort
        what is left, then cancel the apps still running."""
        self.stopping = True
        self._accepting.cancel()
        for connection in list(self.connections):
            connection.shutdown()
        with trio.move_on_after(self.options.shutdown_timeout):
            while self.connections:
                await self.connection_gone.park()
        if self.connections:
            log.warning(
                "shutdown timeout (%gs): aborting %d connection(s)",
                self.options.shutdown_timeout,
                len(self.connections),
            )
            for connection in list(self.connections):
                connection.abort()
        connections.cancel_scope.cancel()

    async def _tick(self) -> None:
        seconds = 0
        while True:
            self.context.tick(time.time())
            seconds += 1
            if seconds % 2 == 0 and self.endpoints is not None:
                self.endpoints.poll()  # certificate files changed: reload them
            await trio.sleep(1.0 - time.time() % 1.0)

    # -- the command line ---------------------------------------------------------------------

    def run(self, on_started: Callable[[list[str]], None] | None = None) -> None:
        """Serve until SIGINT or SIGTERM, then stop gracefully; a second signal stops at once.
        SIGHUP reloads the https certificates."""
        with _plain_errors():
            trio.run(self._run_with_signals, on_started)

    async def _run_with_signals(self, on_started: Callable[[list[str]], None] | None) -> None:
        # SIGUSR1 logs the rejection counts without stopping.
        signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)
        with trio.open_signal_receiver(*signals) as received:
            async with trio.open_nursery() as nursery:
                started = False

                async def watch() -> None:
                    seen = 0
                    async for signum in received:
                        if signum == signal.SIGUSR1:
                            counts = self.context.rejection_counts()
                            log_rejection_summary(counts, when_none=True)
                            continue
                        if signum == signal.SIGHUP:
                            if self.endpoints is not None:
                                self.endpoints.reload_certificates()
                            continue
                        seen += 1
                        if not started:
                            # The app's lifespan startup may never end.
                            log.info("stopping before start-up completed")
                            nursery.cancel_scope.cancel()
                        elif seen == 1:
                            log.info(
                                "shutting down (finishing requests in flight; signal again "
                                "to force)"
                            )
                            self.request_stop()
                        else:
                            log.warning("forced shutdown")
                            for connection in list(self.connections):
                                connection.abort()
                            nursery.cancel_scope.cancel()

                async def serve(
                    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
                ) -> None:
                    await self.serve(task_status=task_status)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                await nursery.start(serve)
                started = True
                if on_started is not None:
                    on_started(self.addresses)


def _reset(sock: trio.socket.SocketType) -> None:
    """Close with RST (linger 0): unsent bytes are dropped and the peer sees a reset."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@contextlib.contextmanager
def _plain_errors() -> Iterator[None]:
    """Let one error out of trio's exception groups (so callers can catch BindError or
    LifespanFailed as the asyncio adapter raises them)."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], Exception):
            raise leaves[0] from None
        raise


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
