"""The asyncio adapter (also runs on uvloop): sockets and timers in, engine calls out.

Each connection is an ``asyncio.Protocol``. Bytes go straight into the engine; after every engine
call ``_sync`` writes what the engine produced, pauses or resumes reading as the engine asks,
closes when it says so, and keeps one timer armed for the engine's next deadline. Apps start
together once the loop has handed out a turn's reads (``AsyncioServer._start_apps``), each run at
once up to its first real wait and given a task only if it waits (app_tasks.py); their
``receive``/``send`` are the engine's ASGI translation plus waiting.
WSGI apps run in a thread pool (``TIERCEL_THREADS`` threads); every engine operation they cause
is handed back to the loop's thread (``_LoopWsgiHost``), because the engine is not thread-safe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import time
import weakref
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from typing import Any, TypeVar, cast

from tiercel.apps.endpoints import EndpointManager
from tiercel.apps.lifespan import Lifespan
from tiercel.apps.loader import resolve_interface
from tiercel.apps.logs import LoggingObserver, log_app_exception, log_app_problem
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
from tiercel.core.events import ConnectionDelegated, Event, RequestReceived, StreamUpdated
from tiercel.core.files import FileSegment
from tiercel.core.flush import ABORT, CLOSE, KEEP_READING
from tiercel.core.stream import ClientDisconnected, HttpStream
from tiercel.core.wsgi import WsgiCycle, WsgiErrors

from .app_tasks import start_app
from .delegation import DelegationFailed, QueueSender, serve_queue_asyncio
from .files import OpenedFile, read_range, send_file_body, write_file_through_stream
from .serving import ServesUntilStopped
from .sockets import FIRST_REQUEST_GRACE, Listener, bind_endpoints, take_reuse_port_queue

log = logging.getLogger("tiercel.error")

# After sending FIN, how long to keep reading (and discarding) before closing for good.
LINGER_SECONDS = 2.0
# Deadlines further away than this wait on the server's heartbeat, not on a loop timer each.
HEARTBEAT_HORIZON = 2.0
# Pipelined responses held back to share one write (_Connection._hold) never exceed this.
HOLD_AT_MOST = 64 * 1024

ASGIApp = Callable[..., Coroutine[Any, Any, None]]
T = TypeVar("T")


class _Connection(asyncio.Protocol):
    def __init__(self, server: AsyncioServer, listener: Listener) -> None:
        self._server = server
        self._listener = listener
        server.unmade.add(self)  # accepted; known to the server once connection_made runs
        self._loop = server.loop
        self._conn: EngineConnection | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # Waiters per stream: an app may wait in receive() and send() at the same time.
        self._waiters: dict[HttpStream, list[asyncio.Future[None]]] = {}
        self._linger: asyncio.TimerHandle | None = None
        self._peer_eof = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._reading = True
        self._closed = False
        self._sendfile: asyncio.Task[int] | None = None  # loop.sendfile in progress
        self._received_any = False
        self._grace: asyncio.TimerHandle | None = None  # FIRST_REQUEST_GRACE, while stopping
        # A request's app is queued and the flush after the read that brought it is left to
        # the app's start, later in the same loop turn: the app's own answer flushes almost
        # always, and a flush costs as much as a tenth of a request (_start_apps).
        self._flush_owed = False
        # Apps started and not yet running, and the bytes held back until they have (_hold).
        self._unstarted = 0
        self._held: list[bytes] | None = None
        self._held_size = 0
        self._held_write: asyncio.Handle | None = None

    # -- transport callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self._transport = cast("asyncio.Transport", transport)
        server = self._server
        server.unmade.discard(self)
        if not server.context.try_open_connection():
            self._closed = True
            self._transport.abort()
            return
        info = self._transport_info(transport)
        self._conn = open_connection(
            server.context, info, self._loop.time(), self._listener.settings
        )
        server.connections.add(self)
        if server.stopping:
            self.shutdown()
        self._sync()

    def _transport_info(self, transport: asyncio.BaseTransport) -> TransportInfo:
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        return TransportInfo(
            local_address=(local[0], local[1]) if isinstance(local, tuple) else (local or None),
            remote_address=(peer[0], peer[1]) if isinstance(peer, tuple) else None,
            sendfile=True,  # _write_file_raw
        )

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        self._received_any = True
        if conn is not None:
            self._dispatch(conn.receive_data(data, self._loop.time()))
            if self._unstarted:  # the app's start, later in this turn, flushes (_start_apps)
                self._flush_owed = True
            else:
                self._sync()
        if self._grace is not None:  # the request came in time; close after answering it
            self._grace.cancel()
            self._grace = None
            self._shutdown_now()

    def eof_received(self) -> bool:
        self._peer_eof = True
        if self._closed and self._transport is not None:
            self._transport.close()  # lingering close: the peer has finished too
            return True
        conn = self._conn
        if conn is not None:
            self._dispatch(conn.receive_data(b"", self._loop.time()))
            self._sync()
        return True  # keep the write side open; the engine decides when to close

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        self._server.connections.discard(self)
        self._server.context.connection_closed()
        if self._timer is not None:
            self._timer.cancel()
        self._server.heartbeat.discard(self)
        if self._linger is not None:
            self._linger.cancel()
        if self._grace is not None:
            self._grace.cancel()
        if self._held_write is not None:
            self._held_write.cancel()
        self._held = None
        self._dispatch(conn.connection_lost(self._loop.time()))
        self._wake_writers()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._conn is not None and self._transport is not None:
            buffered = self._transport.get_write_buffer_size()
            self._conn.set_write_blocked(True, self._loop.time(), buffered)
            self._arm_timer()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._conn is not None:
            self._conn.set_write_blocked(False, self._loop.time())
        self._wake_writers()

    # -- engine plumbing --------------------------------------------------------------------

    def _sync(self) -> None:
        """Act on everything the engine has for the adapter after an engine call."""
        self._flush_owed = False
        conn = self._conn
        transport = self._transport
        if conn is None or transport is None:
            return
        events, data, action, deadline = conn.flush()
        if events and self._dispatch(events):
            events, data, action, deadline = conn.flush()  # dispatching changed the engine
        if self._closed:
            if action == ABORT:
                self._abort_transport(transport)
            return
        if action == ABORT:
            self._closed = True
            self._held = None
            self._abort_transport(transport)
            return
        if data:
            if self._unstarted and action != CLOSE and self._hold(data):
                pass  # written with what those apps send, or on the loop's next turn
            elif self._held is not None:
                self._held.extend((data,) if type(data) is bytes else data)
                self._write_held()  # the held responses and this one, in one write
            elif type(data) is bytes:
                transport.write(data)
            else:
                transport.writelines(data)  # a large body after its head, not copied
        elif self._held is not None and action == CLOSE:
            self._write_held()
        if action == CLOSE:
            self._closed = True
            self._close_gracefully(transport)
        else:
            reading = action == KEEP_READING
            if reading != self._reading:
                self._reading = reading
                if reading:
                    transport.resume_reading()
                else:
                    transport.pause_reading()
        # Only move the timer earlier; a timer that fires early just re-arms. This keeps timer
        # churn off the per-request path (the keep-alive deadline moves on every request). A
        # closing connection's last flush is bounded by the engine's write deadline too.
        if deadline is not None and (
            (self._timer is None and self not in self._server.heartbeat)
            or deadline < self._timer_at
        ):
            self._set_timer(deadline)

    def _hold(self, data: bytes | list[bytes]) -> bool:
        """Apps of this connection have been started and have not had their first turn yet
        (the next pipelined request; more HTTP/2 streams): hold these bytes until they have,
        so that their answers go out in one write instead of one each. An app that waits
        delays nothing: the held bytes go out as soon as the first turns are over."""
        held = self._held
        if held is None:
            held = self._held = []
        held.extend((data,) if type(data) is bytes else data)
        self._held_size += len(data) if type(data) is bytes else sum(map(len, data))
        if self._held_size >= HOLD_AT_MOST:
            self._write_held()
            return True
        if self._held_write is not None:
            self._held_write.cancel()  # re-queued behind the apps just queued (_start_apps)
        self._held_write = self._loop.call_soon(self._write_held)
        return True

    def _write_held(self) -> None:
        held, self._held, self._held_size = self._held, None, 0
        if self._held_write is not None:
            self._held_write.cancel()
            self._held_write = None
        transport = self._transport
        if held and transport is not None and not self._closed:
            transport.writelines(held)

    def _close_gracefully(self, transport: asyncio.Transport) -> None:
        """Lingering close: send FIN after the last bytes, then read and discard for a moment.
        Closing with unread bytes in the kernel makes it send a TCP reset, which can destroy
        the response (a 400, a GOAWAY) before the client reads it."""
        if self._peer_eof or not transport.can_write_eof():
            transport.close()  # the peer has finished sending: nothing to wait for
            return
        try:
            transport.write_eof()
        except OSError:  # the peer is already gone (reset): nothing to linger for
            transport.abort()
            return
        if not self._reading:
            self._reading = True
            transport.resume_reading()
        self._linger = self._loop.call_later(LINGER_SECONDS, transport.close)

    def _arm_timer(self) -> None:
        conn = self._conn
        deadline = conn.next_deadline() if conn is not None else None
        if deadline is not None and (
            (self._timer is None and self not in self._server.heartbeat)
            or deadline < self._timer_at
        ):
            self._set_timer(deadline)

    def _set_timer(self, deadline: float) -> None:
        """A loop timer for a near deadline; a far one (an idle connection's keep-alive)
        waits on the server's once-a-second heartbeat instead, as Kestrel's do: a loop timer
        per idle connection costs more memory than the rest of the connection's Python
        objects together."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline - self._loop.time() > HEARTBEAT_HORIZON:
            self._server.heartbeat.add(self)
            return
        self._server.heartbeat.discard(self)
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def unpark_timer(self) -> None:
        """The heartbeat found this connection's deadline near: a loop timer takes over."""
        self._timer = self._loop.call_at(self._timer_at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        conn = self._conn
        if conn is None:
            return
        # call_at may fire up to one clock resolution early; never hand the engine a time
        # before the deadline it asked for.
        now = max(self._loop.time(), self._timer_at)
        self._dispatch(conn.on_timer(now))
        self._sync()

    def _dispatch(self, events: Sequence[Event]) -> bool:
        """Act on the engine's events; True when that may have changed the engine's state
        (a delegation refused), so the caller flushes again."""
        touched = False
        for event in events:
            if type(event) is StreamUpdated:
                waiters = self._waiters.pop(event.stream, None)
                if waiters:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(None)
            elif type(event) is RequestReceived:
                self._unstarted += 1  # until run_asgi / run_wsgi begins
                self._server.start_request(self, event.stream)
            elif type(event) is ConnectionDelegated:
                self._hand_off(event)
                touched = True
        return touched

    def _hand_off(self, event: ConnectionDelegated) -> None:
        """Request delegation: the socket goes to the queue's server. Closing our descriptor
        then sends nothing (the receiver holds the connection open); on failure the engine
        has a 503 for ``_sync`` to send."""
        transport = self._transport
        sender = self._server.delegation_sender
        sock = transport.get_extra_info("socket") if transport is not None else None
        try:
            if sock is None or sender is None:
                raise DelegationFailed("this transport has no socket to hand over")
            sender.send(event.queue, event.handoff, sock.fileno())
        except DelegationFailed as exc:
            event.refuse(str(exc))  # the engine logs it as a rejection
            return
        assert transport is not None
        self._closed = True
        transport.abort()  # close(2) only: no shutdown, no linger, so neither FIN nor RST

    def _wake_writers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def shutdown(self) -> None:
        if self._conn is None:
            return
        if not self._received_any:  # nothing yet: wait FIRST_REQUEST_GRACE for a request
            if self._grace is None:
                self._grace = self._loop.call_later(FIRST_REQUEST_GRACE, self._shutdown_now)
            return
        self._shutdown_now()

    def _shutdown_now(self) -> None:
        self._grace = None
        if self._conn is not None:
            self._dispatch(self._conn.shutdown(self._loop.time()))
            self._sync()

    def abort(self) -> None:
        if self._transport is not None:
            self._abort_transport(self._transport)

    def _abort_transport(self, transport: asyncio.Transport) -> None:
        sending = self._sendfile
        if sending is None or sending.done():
            transport.abort()
            return
        # asyncio (3.11) breaks when a transport is aborted in the middle of loop.sendfile:
        # the transport's empty-waiter is still set, so its connection_lost never runs. Stop
        # the sendfile first; abort once its clean-up has run.
        sending.cancel()
        sending.add_done_callback(lambda _: transport.abort())

    @property
    def active(self) -> bool:
        """Still serving (not just lingering after its last bytes)."""
        return not self._closed

    # -- the app's side ---------------------------------------------------------------------

    def run_app(self, stream: HttpStream) -> None:
        """Start the request's app at once, up to its first real wait (app_tasks.py); then the
        flush left over from the read that brought the request, if the app did not flush."""
        server = self._server
        if server.wsgi_pool is not None:
            coroutine = self.run_wsgi(stream)
        else:
            coroutine = self.run_asgi(server.app, stream)
        task = start_app(self._loop, coroutine)
        if task is not None:
            server.tasks[stream] = task  # run_asgi and run_wsgi take themselves out
        if self._flush_owed:
            self._sync()

    async def run_asgi(self, app: ASGIApp, stream: HttpStream) -> None:
        self._unstarted -= 1
        loop = self._loop
        server = self._server
        cycle = AsgiHttpCycle(stream)
        scope = http_scope(stream, server.lifespan_state, server.extensions)

        first_read = True

        async def receive() -> Any:
            nonlocal first_read
            while True:
                message = cycle.receive(loop.time())
                # Taking body bytes (or the first read: 100-continue, the body-rate clock) can
                # change what the engine wants; finding nothing to take changes nothing.
                if message is not None or first_read:
                    first_read = False
                    self._sync()
                if message is not None:
                    return message
                waiter = loop.create_future()
                self._waiters.setdefault(stream, []).append(waiter)
                await waiter

        async def send(message: Any) -> None:
            transport = self._transport
            if transport is not None and transport.is_closing() and not self._closed:
                # The peer reset: asyncio reports connection_lost a moment later (call_soon).
                # Yield so it runs and aborts the stream; otherwise an app that keeps sending
                # would spin here, writing into a dead transport, and starve the whole loop.
                await asyncio.sleep(0)
            while self._write_paused and not self._closed:
                waiter = loop.create_future()
                self._drain_waiters.append(waiter)
                await waiter
            # This stream's own buffer is full (HTTP/2 windows); an aborted stream never waits.
            while stream.flow_controlled and not stream.can_write and not stream.aborted:
                waiter = loop.create_future()
                self._waiters.setdefault(stream, []).append(waiter)
                await waiter
            produced = True
            try:
                produced = cycle.send(message, loop.time())
            finally:
                if produced:
                    self._sync()
            if not produced and cycle.pending_file is not None:
                await send_file_body(cycle, self.send_opened_file)

        try:
            await app(scope, receive, send)
        except ClientDisconnected:
            log.debug("client went away during %r", stream)
        except Exception:
            log_app_exception("ASGI", stream)
        finally:
            server.tasks.pop(stream, None)
            answered = stream.response_complete
            problem = cycle.app_finished(None if answered else loop.time())
            if problem:
                log_app_problem(stream, problem)
            self._waiters.pop(stream, None)
            # An HTTP/1.1 stream whose response was complete (and flushed by send) leaves the
            # engine nothing new when its app returns; HTTP/2 may release window or streams.
            if problem or not answered or stream.flow_controlled:
                self._sync()

    # -- direct file transmission (core/files.py) ----------------------------------------------

    async def send_opened_file(self, stream: HttpStream, opened: OpenedFile, end: bool) -> None:
        """A pathsend/zerocopysend range: raw with sendfile where the engine allows it, else
        read in pieces and written through the engine."""
        loop = self._loop
        counters = self._server.context.file_counters
        if not stream.can_transmit_file:
            await write_file_through_stream(
                stream,
                opened,
                end,
                now=loop.time,
                until_writable=self._until_writable,
                flush=self._sync,
            )
            counters["read_loop_files"] += 1
            counters["read_loop_bytes"] += opened.count
            return
        stream.transmit_file(opened.segment, end, loop.time())
        self._sync()  # the head and framing that precede the file
        if stream.transmitting_file:
            await self.write_file_raw(opened.segment)
            if not stream.aborted_flag:
                stream.file_transmitted(loop.time())
            self._sync()

    async def write_file_raw(self, segment: FileSegment) -> None:
        """The range with ``loop.sendfile`` (os.sendfile), after what the engine wrote."""
        loop = self._loop
        transport = self._transport
        counters = self._server.context.file_counters
        if transport is None or self._closed:
            raise ClientDisconnected("the client has disconnected")
        file: Any = segment.file  # an open file object: loop.sendfile also seeks it
        sending = loop.create_task(
            loop.sendfile(transport, file, segment.offset, segment.count, fallback=False)
        )
        self._sendfile = sending
        try:
            await asyncio.shield(sending)  # only _abort_transport cancels the sendfile itself
        except asyncio.CancelledError:
            if not sending.cancelled():  # this task was cancelled, not the sendfile: pass it on
                sending.cancel()
                raise
            raise ClientDisconnected("the connection was aborted during a file") from None
        except (NotImplementedError, asyncio.SendfileNotAvailableError):
            # uvloop and unusual transports: the same bytes, copied through the transport.
            for piece in read_range(segment.file, segment.offset, segment.count):
                await self._wait_transport_writable()
                if self._closed:
                    raise ClientDisconnected("the client has disconnected") from None
                transport.write(piece)
            counters["copied_files"] += 1
            counters["copied_bytes"] += segment.count
        except (ConnectionError, OSError) as exc:
            # The socket failed under sendfile; its clean-up has run, so aborting is safe.
            if not self._closed:
                self._closed = True
                transport.abort()
            raise ClientDisconnected(f"the client has disconnected ({exc!r})") from None
        else:
            counters["sendfile_files"] += 1
            counters["sendfile_bytes"] += segment.count
        finally:
            self._sendfile = None
            # sendfile pauses and resumes reading itself; the engine's wish wins.
            if not self._reading and not self._closed:
                transport.pause_reading()

    async def _wait_transport_writable(self) -> None:
        while self._write_paused and not self._closed:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    async def _until_writable(self, stream: HttpStream) -> None:
        """Wait while the transport is paused or the stream's own buffer is full (HTTP/2)."""
        await self._wait_transport_writable()
        while not stream.can_write and not stream.aborted:
            waiter = self._loop.create_future()
            self._waiters.setdefault(stream, []).append(waiter)
            await waiter

    async def run_wsgi(self, stream: HttpStream) -> None:
        self._unstarted -= 1
        server = self._server
        host = _LoopWsgiHost(self, stream)
        errors = WsgiErrors(partial(log.error, "%s"))
        cycle = WsgiCycle(server.app, stream, host, errors, {"SERVER_SOFTWARE": "tiercel"})
        try:
            await self._loop.run_in_executor(server.wsgi_pool, cycle.run)
        except ClientDisconnected:
            log.debug("client went away during %r", stream)
        except Exception:
            log_app_exception("WSGI", stream)
        finally:
            server.tasks.pop(stream, None)
            host.closed = True  # the app's thread may still run (cancelled): it touches nothing
            problem = cycle.app_finished(self._loop.time())
            if problem:
                log_app_problem(stream, problem)
            self._waiters.pop(stream, None)
            self._sync()


class _HandedOverConnection(_Connection):
    """A connection another tiercel delegated to our queue: its addresses come with the
    handoff (they may be a PROXY header's), and the bytes the front read are fed first."""

    def __init__(self, server: AsyncioServer, listener: Listener, handoff: Handoff) -> None:
        super().__init__(server, listener)
        self._handoff = handoff

    def _transport_info(self, transport: asyncio.BaseTransport) -> TransportInfo:
        handoff = self._handoff
        return TransportInfo(
            local_address=handoff.local_address,
            remote_address=handoff.remote_address,
            sendfile=True,
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._conn is not None and self._handoff.data:
            self.data_received(self._handoff.data)


class _LoopWsgiHost:
    """``WsgiHost`` for a WSGI app on a pool thread: engine operations run on the loop."""

    def __init__(self, connection: _Connection, stream: HttpStream) -> None:
        self._connection = connection
        self._stream = stream
        self._loop = connection._loop
        self._writable = True  # as of the last operation, read on the loop's thread
        self.closed = False

    def now(self) -> float:
        return self._loop.time()  # only called on the loop's thread, inside call()

    def call(self, fn: Callable[[], T]) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        connection = self._connection

        def operation() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                if self.closed:
                    raise ClientDisconnected("the request is over")
                result = fn()
            except BaseException as exc:
                connection._sync()
                future.set_exception(exc)
            else:
                connection._sync()
                self._writable = not connection._write_paused and self._stream.can_write
                future.set_result(result)

        try:
            self._loop.call_soon_threadsafe(operation)
        except RuntimeError:  # the loop is closed
            raise ClientDisconnected("the server has stopped") from None
        return self._result(future)

    def _result(self, future: concurrent.futures.Future[T]) -> T:
        while True:
            try:
                return future.result(0.5)
            except TimeoutError:
                if future.done():
                    raise  # the operation itself raised TimeoutError
                if self.closed or self._loop.is_closed():
                    future.cancel()
                    raise ClientDisconnected("the server has stopped") from None

    def _wait(self, coroutine: Coroutine[Any, Any, None]) -> None:
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        except RuntimeError:
            coroutine.close()
            raise ClientDisconnected("the server has stopped") from None
        self._result(future)

    def wait_for_body(self, stream: HttpStream) -> None:
        self._wait(self._body_arrived(stream))

    def write_file(self, stream: HttpStream, segment: FileSegment) -> None:
        """WsgiFileHost: sendfile on the loop, while the app's thread waits."""
        self._wait(self._connection.write_file_raw(segment))

    async def _body_arrived(self, stream: HttpStream) -> None:
        connection = self._connection
        while not (
            stream.body_buffered or stream.body_complete_flag or stream.aborted_flag or self.closed
        ):
            waiter = self._loop.create_future()
            connection._waiters.setdefault(stream, []).append(waiter)
            await waiter

    def wait_writable(self, stream: HttpStream) -> None:
        if not self._writable:
            self._wait(self._can_write(stream))

    async def _can_write(self, stream: HttpStream) -> None:
        connection = self._connection
        while not (self.closed or stream.aborted_flag):
            waiter = self._loop.create_future()
            if connection._write_paused and not connection._closed:
                connection._drain_waiters.append(waiter)
            elif not stream.can_write:
                connection._waiters.setdefault(stream, []).append(waiter)
            else:
                break
            await waiter
        self._writable = True


class AsyncioServer(ServesUntilStopped):
    def __init__(self, app: ASGIApp, options: ServerOptions) -> None:
        self.app = app
        self.options = options
        self.context = ServerContext(
            options.engine,
            LoggingObserver(options.access_log, options.rejection_log_level),
            time.time(),
        )
        self.connections: set[_Connection] = set()
        # Connections the loop has accepted and built a protocol for whose connection_made has
        # not run yet (a TLS one: until its handshake is done); a stop waits for them (stop).
        self.unmade: weakref.WeakSet[_Connection] = weakref.WeakSet()
        # Connections whose next deadline is far off: checked once a second (_heartbeat).
        self.heartbeat: set[_Connection] = set()
        # The task running each request's app; it removes itself when the app is done (cheaper
        # than a done-callback, and than asyncio.current_task(), which costs a getpid on 3.11).
        self.tasks: dict[HttpStream, asyncio.Task[None]] = {}
        # Requests whose apps start on the loop's next turn (start_request, _start_apps).
        self._queued_apps: list[tuple[_Connection, HttpStream]] = []
        self.listeners: list[Listener] = []
        self.extensions: dict[str, Any] = {}
        self.interface = resolve_interface(app, options.interface)
        # WSGI apps run in a pool of this many threads (made by start()); they have no lifespan.
        self.wsgi_pool: concurrent.futures.Executor | None = None
        if self.interface == "wsgi":
            from .threads_adapter import worker_threads

            self.wsgi_threads = worker_threads()
        lifespan = "off" if self.interface == "wsgi" else options.lifespan
        self.lifespan = Lifespan(app, lifespan, self.extensions)
        self.lifespan_state: dict[str, Any] | None = None
        self.stopping = False
        self._servers: list[asyncio.Server] = []
        self._ticker: asyncio.Task[None] | None = None
        self._stop_requested: asyncio.Event | None = None
        self._stopped = False
        self._background: set[asyncio.Task[None]] = set()
        self.endpoints: EndpointManager | None = None
        self.loop: asyncio.AbstractEventLoop  # set by start()
        # Request delegation: the front's connections to the queues (core/delegation.py).
        self.delegation_sender = QueueSender() if options.engine.delegation is not None else None
        self._queue_tasks: list[asyncio.Task[None]] = []  # serving our queue: listeners

    @property
    def addresses(self) -> list[str]:
        return self.context.addresses.addresses

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self.listeners = bind_endpoints(list(self.options.endpoints))
        try:
            self.endpoints = EndpointManager(self.options, self.listeners)
            addresses = [listener.url for listener in self.listeners]
            self.context.addresses.addresses[:] = addresses
            self.extensions[ADDRESSES_EXTENSION] = {"addresses": addresses}
            self.extensions[INFORMATIONAL_EXTENSION] = {}
            self.extensions.update(FILE_EXTENSIONS)
            if self.interface == "wsgi":
                from .threads_adapter import DaemonThreadPool

                self.wsgi_pool = DaemonThreadPool(self.wsgi_threads, "tiercel-wsgi")
            await self.lifespan.startup(self._spawn)
            self.lifespan_state = self.lifespan.state if self.lifespan.mode != "off" else None
            self._ticker = self.loop.create_task(self._tick())
            for listener in self.listeners:
                if listener.is_queue:
                    adopt = partial(self._adopt_handoff, listener)
                    queue = serve_queue_asyncio(listener.sock, listener.url, adopt)
                    self._queue_tasks.append(self.loop.create_task(queue))
                    continue
                self._servers.append(
                    await self.loop.create_server(
                        partial(_Connection, self, listener), sock=listener.sock, start_serving=True
                    )
                )
        except BaseException:
            for listener in self.listeners:
                listener.close()
            raise

    async def _adopt_handoff(
        self, listener: Listener, handoff: Handoff, sock: socket.socket
    ) -> None:
        """A connection delegated to our queue: served like one we accepted."""
        if self.stopping:
            sock.close()
            return
        try:
            await self.loop.connect_accepted_socket(
                partial(_HandedOverConnection, self, listener, handoff), sock
            )
        except OSError as exc:
            log.warning("cannot serve a delegated connection: %s", exc)
            sock.close()

    async def _serve_reuse_port_queue(self, queued: list[tuple[Listener, socket.socket]]) -> None:
        """--reuse-port: connections taken from our own socket's queue as it closed."""
        for listener, sock in queued:
            try:
                await self.loop.connect_accepted_socket(partial(_Connection, self, listener), sock)
            except OSError as exc:
                log.warning("cannot serve a connection queued at shutdown: %s", exc)
                sock.close()

    def _spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        task = self.loop.create_task(fn(*args))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _tick(self) -> None:
        seconds = 0
        while True:
            self.context.tick(time.time())
            self._heartbeat()
            seconds += 1
            if seconds % 2 == 0 and self.endpoints is not None:
                self.endpoints.poll()  # certificate files changed: reload them
            await asyncio.sleep(1.0 - time.time() % 1.0)

    def _heartbeat(self) -> None:
        """Connections whose parked deadline is now within the horizon get a loop timer."""
        horizon = self.loop.time() + HEARTBEAT_HORIZON
        due = [c for c in self.heartbeat if c._timer_at <= horizon]
        for connection in due:
            self.heartbeat.discard(connection)
            connection.unpark_timer()

    def start_request(self, connection: _Connection, stream: HttpStream) -> None:
        """Queue the request's app; queued apps start together, after the loop has handed
        out this turn's reads (``_start_apps``)."""
        if not self._queued_apps:
            self.loop.call_soon(self._start_apps)
        self._queued_apps.append((connection, stream))

    def _start_apps(self) -> None:
        """Start each queued app at once, up to its first real wait (app_tasks.py): one that
        answers without waiting costs no task. Starting them here rather than inside each
        read is measurably faster over real sockets: every ready connection is read first,
        then every answer is written, instead of alternating reads and writes. Requests
        queued meanwhile (pipelined ones, by these apps' answers) wait for the next call."""
        queued, self._queued_apps = self._queued_apps, []
        for connection, stream in queued:
            connection.run_app(stream)

    def _stop_queues(self) -> None:
        for task in self._queue_tasks:
            task.cancel()
        if self.delegation_sender is not None:
            self.delegation_sender.close()

    async def stop(self) -> None:
        """Graceful stop: stop accepting, finish in-flight requests (up to the shutdown
        timeout), close every connection, run the app's lifespan shutdown."""
        if self._stopped or not hasattr(self, "loop"):
            return  # stopped already, or never started
        self._stopped = True
        self.stopping = True
        queued = take_reuse_port_queue(self.listeners)  # right before the sockets close
        for server in self._servers:
            server.close()
        # A connection accepted just before the close is not ours yet: asyncio builds its
        # protocol in a task of its own, and both loops call connection_made a callback later.
        # Returning before it is made would drop it (a recycled worker exits right away), so
        # its accept is given two turns to build it, and then FIRST_REQUEST_GRACE to be made
        # (connection_made shuts it down gracefully, as any connection accepted while stopping).
        for _ in range(2):
            await asyncio.sleep(0)
        await self._serve_reuse_port_queue(queued)
        self._stop_queues()
        for connection in list(self.connections):
            connection.shutdown()
        now = self.loop.time()
        deadline = now + self.options.shutdown_timeout
        unmade_deadline = min(deadline, now + FIRST_REQUEST_GRACE)
        while self.loop.time() < deadline and (
            any(c.active for c in self.connections)
            or (self.unmade and self.loop.time() < unmade_deadline)
        ):
            await asyncio.sleep(0.05)
        busy = [c for c in self.connections if c.active]
        if busy:
            log.warning(
                "shutdown timeout (%gs): aborting %d connection(s)",
                self.options.shutdown_timeout,
                len(busy),
            )
        for connection in list(self.connections):
            connection.abort()  # the busy ones, and any still lingering after their last bytes
        request_tasks = [t for t in self.tasks.values() if not t.done()]
        for task in request_tasks:
            task.cancel()
        for task in request_tasks:
            with contextlib.suppress(BaseException):
                await task
        if self.wsgi_pool is not None:
            self.wsgi_pool.shutdown(wait=False, cancel_futures=True)
        await self.lifespan.shutdown()
        if self._ticker is not None:
            self._ticker.cancel()
        for listener in self.listeners:
            listener.close()
        if self._stop_requested is not None:
            self._stop_requested.set()
