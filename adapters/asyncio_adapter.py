"""The asyncio adapter (also runs on uvloop): sockets and timers in, engine calls out.

Each connection is an ``asyncio.Protocol``. Bytes go straight into the engine; after every engine
call ``_sync`` writes what the engine produced, pauses or resumes reading as the engine asks,
closes when it says so, and keeps one timer armed for the engine's next deadline. Apps run as one
task per request; their ``receive``/``send`` are the engine's ASGI translation plus waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any, cast

from tiercel.apps.endpoints import EndpointManager
from tiercel.apps.lifespan import Lifespan
from tiercel.apps.logs import LoggingObserver
from tiercel.apps.options import ServerOptions
from tiercel.core.asgi import (
    ADDRESSES_EXTENSION,
    INFORMATIONAL_EXTENSION,
    AsgiHttpCycle,
    http_scope,
)
from tiercel.core.connection import EngineConnection, open_connection
from tiercel.core.context import ServerContext, TransportInfo
from tiercel.core.events import Event, RequestReceived
from tiercel.core.headers import escape_for_log
from tiercel.core.stream import ClientDisconnected, HttpStream

from .sockets import Listener, bind_endpoints

log = logging.getLogger("tiercel.error")

ASGIApp = Callable[..., Coroutine[Any, Any, None]]


class _Connection(asyncio.Protocol):
    def __init__(self, server: AsyncioServer, listener: Listener) -> None:
        self._server = server
        self._listener = listener
        self._loop = server.loop
        self._conn: EngineConnection | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._waiters: dict[HttpStream, asyncio.Future[None]] = {}
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._reading = True
        self._closed = False

    # -- transport callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self._transport = cast("asyncio.Transport", transport)
        server = self._server
        if not server.context.try_open_connection():
            self._closed = True
            self._transport.abort()
            return
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        info = TransportInfo(
            local_address=(local[0], local[1]) if isinstance(local, tuple) else (local or None),
            remote_address=(peer[0], peer[1]) if isinstance(peer, tuple) else None,
        )
        self._conn = open_connection(
            server.context, info, self._loop.time(), self._listener.settings
        )
        server.connections.add(self)
        if server.stopping:
            self._conn.shutdown(self._loop.time())
        self._sync()

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        if conn is not None:
            self._dispatch(conn.receive_data(data, self._loop.time()))
            self._sync()

    def eof_received(self) -> bool:
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
        conn = self._conn
        transport = self._transport
        if conn is None or transport is None:
            return
        if self._closed:
            if conn.should_abort:
                transport.abort()
            return
        events = conn.pop_events()
        if events:
            self._dispatch(events)
        if conn.should_abort:
            self._closed = True
            transport.abort()
            return
        data = conn.data_to_send()
        if data:
            transport.write(data)
        if conn.should_close:
            self._closed = True
            transport.close()
            self._arm_timer()  # the last flush is bounded by the engine's write deadline
            return
        wants_read = conn.wants_read
        if wants_read != self._reading:
            self._reading = wants_read
            if wants_read:
                transport.resume_reading()
            else:
                transport.pause_reading()
        self._arm_timer()

    def _arm_timer(self) -> None:
        conn = self._conn
        deadline = conn.next_deadline() if conn is not None else None
        if deadline is None:
            return
        # Only move the timer earlier; a timer that fires early just re-arms. This keeps timer
        # churn off the per-request path (the keep-alive deadline moves on every request).
        if self._timer is None or deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)

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

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if type(event) is RequestReceived:
                self._server.start_request(self, event.stream)
            else:
                waiter = self._waiters.pop(event.stream, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    def _wake_writers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def shutdown(self) -> None:
        if self._conn is not None:
            self._dispatch(self._conn.shutdown(self._loop.time()))
            self._sync()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- the app's side ---------------------------------------------------------------------

    async def run_asgi(self, app: ASGIApp, stream: HttpStream) -> None:
        loop = self._loop
        server = self._server
        cycle = AsgiHttpCycle(stream)
        scope = http_scope(stream, server.lifespan_state, server.extensions)

        async def receive() -> Any:
            while True:
                message = cycle.receive(loop.time())
                self._sync()
                if message is not None:
                    return message
                waiter = loop.create_future()
                self._waiters[stream] = waiter
                await waiter

        async def send(message: Any) -> None:
            while self._write_paused and not self._closed:
                waiter = loop.create_future()
                self._drain_waiters.append(waiter)
                await waiter
            produced = True
            try:
                produced = cycle.send(message, loop.time())
            finally:
                if produced:
                    self._sync()

        try:
            await app(scope, receive, send)
        except ClientDisconnected:
            log.debug("client went away during %r", stream)
        except Exception:
            log.exception(
                "exception in ASGI app while serving %s %s",
                stream.method,
                escape_for_log(stream.raw_target),  # never the decoded path: %1b, %0a
            )
        finally:
            problem = cycle.app_finished(loop.time())
            if problem:
                log.error("%s %s: %s", stream.method, escape_for_log(stream.raw_target), problem)
            self._waiters.pop(stream, None)
            self._sync()


class AsyncioServer:
    def __init__(self, app: ASGIApp, options: ServerOptions) -> None:
        self.app = app
        self.options = options
        self.context = ServerContext(
            options.engine, LoggingObserver(options.access_log), time.time()
        )
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.listeners: list[Listener] = []
        self.extensions: dict[str, Any] = {}
        self.lifespan = Lifespan(app, options.lifespan, self.extensions)
        self.lifespan_state: dict[str, Any] | None = None
        self.stopping = False
        self._servers: list[asyncio.Server] = []
        self._ticker: asyncio.Task[None] | None = None
        self._stop_requested: asyncio.Event | None = None
        self._stopped = False
        self._background: set[asyncio.Task[None]] = set()
        self.endpoints: EndpointManager | None = None
        self.loop: asyncio.AbstractEventLoop  # set by start()

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
            await self.lifespan.startup(self._spawn)
            self.lifespan_state = self.lifespan.state if self.options.lifespan != "off" else None
            self._ticker = self.loop.create_task(self._tick())
            for listener in self.listeners:
                self._servers.append(
                    await self.loop.create_server(
                        partial(_Connection, self, listener), sock=listener.sock, start_serving=True
                    )
                )
        except BaseException:
            for listener in self.listeners:
                listener.close()
            raise

    def _spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        task = self.loop.create_task(fn(*args))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _tick(self) -> None:
        seconds = 0
        while True:
            self.context.tick(time.time())
            seconds += 1
            if seconds % 2 == 0 and self.endpoints is not None:
                self.endpoints.poll()  # certificate files changed: reload them
            await asyncio.sleep(1.0 - time.time() % 1.0)

    def start_request(self, connection: _Connection, stream: HttpStream) -> None:
        task = self.loop.create_task(connection.run_asgi(self.app, stream))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def request_stop(self) -> None:
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def serve(self) -> None:
        await self.start()
        await self.serve_started()

    async def serve_started(self) -> None:
        """Serve an already started server until ``request_stop``, then stop gracefully."""
        assert self._stop_requested is not None
        await self._stop_requested.wait()
        await self.stop()

    async def stop(self) -> None:
        """Graceful stop: stop accepting, finish in-flight requests (up to the shutdown
        timeout), close every connection, run the app's lifespan shutdown."""
        if self._stopped or not hasattr(self, "loop"):
            return  # stopped already, or never started
        self._stopped = True
        self.stopping = True
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            connection.shutdown()
        deadline = self.loop.time() + self.options.shutdown_timeout
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.connections:
            log.warning(
                "shutdown timeout (%gs): aborting %d connection(s)",
                self.options.shutdown_timeout,
                len(self.connections),
            )
            for connection in list(self.connections):
                connection.abort()
        request_tasks = [t for t in self.tasks if not t.done()]
        for task in request_tasks:
            task.cancel()
        for task in request_tasks:
            with contextlib.suppress(BaseException):
                await task
        await self.lifespan.shutdown()
        if self._ticker is not None:
            self._ticker.cancel()
        for listener in self.listeners:
            listener.close()
        if self._stop_requested is not None:
            self._stop_requested.set()
