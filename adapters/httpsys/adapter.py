"""The HTTP.sys adapter: Windows' kernel HTTP server in, ASGI apps out, on asyncio.

Theory of operation. HTTP.sys parses HTTP itself, so this adapter drives no codec. ``start``
builds the server session, one URL group per prefix (Wine allows one URL per group; Windows
does not mind), the request queue, and binds them. A completion port of our own, watched by one
thread (``_CompletionPort``), reports every overlapped call; the thread hands each packet to the
loop, which resolves the future waiting for that OVERLAPPED. (asyncio's proactor has an IOCP too,
but it closes completion keys it does not know, so a foreign handle cannot share it.)

``max_accepts`` acceptor tasks each keep one ``HttpReceiveHttpRequest`` outstanding. A received
request becomes an ``_Exchange``: the engine's ``HttpStream`` with the exchange as its owner, so
``core/asgi.py``'s ``AsgiHttpCycle`` translates ASGI messages exactly as on the other adapters.
The exchange turns the stream's operations into HTTP.sys calls:

- reading the body pulls ``HttpReceiveRequestEntityBody`` (the first piece came with the
  request), enforcing the body size limit with a 413;
- a response whose body is complete when it starts (the common case) goes out in ONE
  ``HttpSendHttpResponse`` with the body as data chunks and a Content-Length;
- a streamed body sends the head with ``MORE_DATA`` and the rest with
  ``HttpSendResponseEntityBody``, chunked-framed by us on HTTP/1.1 as HTTP.sys expects. Where
  that call is missing (Wine 8, whose stub aborts the process), the body is buffered and sent
  whole at the end instead.

Stopping cancels the outstanding receives with ``CancelIoEx`` (never ``HttpShutdownRequestQueue``
under Wine: a stub), lets requests in flight finish within the shutdown timeout, then closes the
queue, the URL groups and the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from ctypes import addressof, byref, create_string_buffer
from typing import Any

from tiercel.apps.lifespan import Lifespan
from tiercel.apps.loader import resolve_interface
from tiercel.apps.logs import LoggingObserver, log_app_exception, log_app_problem
from tiercel.apps.options import ServerOptions
from tiercel.core.asgi import ADDRESSES_EXTENSION, FILE_EXTENSIONS, AsgiHttpCycle, http_scope
from tiercel.core.context import TransportInfo
from tiercel.core.errors import ConfigError, LocalProtocolError
from tiercel.core.files import FileSegment
from tiercel.core.http1_chunked import LAST_CHUNK, chunk_frame
from tiercel.core.stream import ClientDisconnected, HttpStream
from tiercel.core.url_prefixes import PrefixTable, UrlPrefix

from ..files import OpenedFile, send_file_body, write_file_through_stream
from ..serving import ServesUntilStopped
from ..sockets import BindError
from . import binding as b
from .binding import HttpApi, HttpApiError
from .marshal import (
    EntityChunks,
    ParsedRequest,
    ResponseBuffers,
    kernel_cache_seconds,
    parse_request,
)
from .options import VERBOSITIES, HttpSysOptions, parse_url_prefixes

log = logging.getLogger("tiercel.error")

AUTHENTICATION_EXTENSION = "tiercel.authentication"
FIRST_RECEIVE_SIZE = 16 * 1024
BODY_READ_SIZE = 64 * 1024
BODY_BUFFER_LIMIT = 1024 * 1024  # pause HttpReceiveRequestEntityBody above this, unread
SEND_HIGH_WATER = 256 * 1024  # a streaming app waits while this much is unsent
STOP_KEY = 0xDEAD  # the completion key that tells the port thread to end
QUEUE_KEY = 1

ASGIApp = Callable[..., Coroutine[Any, Any, None]]


class _CompletionPort:
    """Our IOCP: one thread blocks in GetQueuedCompletionStatus and wakes the loop."""

    def __init__(self, api: HttpApi, loop: asyncio.AbstractEventLoop) -> None:
        self._api = api
        self._loop = loop
        self.port = api.create_completion_port()
        # OVERLAPPED address -> (future, the buffers the kernel writes into until completion)
        self._pending: dict[int, tuple[asyncio.Future[tuple[int, int]], object]] = {}
        self._thread = threading.Thread(target=self._run, name="tiercel-httpsys-iocp", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            error, transferred, key, overlapped = self._api.wait_completion(self.port)
            if key == STOP_KEY and not overlapped:
                return
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                self._loop.call_soon_threadsafe(self._complete, overlapped, error, transferred)

    def _complete(self, overlapped: int, error: int, transferred: int) -> None:
        entry = self._pending.pop(overlapped, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result((error, transferred))

    @property
    def busy(self) -> int:
        return len(self._pending)

    async def call(
        self, handle: int, issue: Callable[[b.OVERLAPPED], int], keep: object
    ) -> tuple[int, int]:
        """Issue one overlapped call; (error, bytes) once its completion packet arrives.

        ``keep`` (the buffers the call reads or writes) stays alive until the packet comes, even
        when the waiting task is cancelled: the cancellation is passed on with CancelIoEx.
        """
        overlapped = b.OVERLAPPED()
        future: asyncio.Future[tuple[int, int]] = self._loop.create_future()
        address = addressof(overlapped)
        self._pending[address] = (future, (overlapped, keep))
        code = issue(overlapped)
        if code not in (b.NO_ERROR, b.ERROR_IO_PENDING):
            # Failed at once: no packet will come (a success still queues one, as on Windows).
            del self._pending[address]
            return code, 0
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            self._api.cancel_io(handle, overlapped)
            raise

    async def drain(self, timeout: float) -> None:
        """Wait for the packets of cancelled calls, so no buffer is freed under the kernel."""
        deadline = self._loop.time() + timeout
        while self._pending and self._loop.time() < deadline:
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self._api.post_completion(self.port, STOP_KEY)
        self._thread.join(2.0)
        self._api.close_handle(self.port)


class _Exchange:
    """One request: the owner of its ``HttpStream``, turning stream operations into calls."""

    def __init__(
        self, server: HttpSysServer, request: ParsedRequest, path_base: str, path: str
    ) -> None:
        self.server = server
        self.request = request
        loop = server.loop
        self.stream = HttpStream(
            self,
            1,
            method=request.method,
            scheme=request.scheme,
            http_version=request.http_version,
            raw_target=request.raw_target,
            raw_path=request.raw_path,
            path=path,
            query_string=request.query_string,
            headers=request.headers,
            path_base=path_base,
            connection_id=str(request.connection_id),
            transport=TransportInfo(request.local_address, request.remote_address, request.scheme),
            max_request_body_size=server.options.engine.limits.max_request_body_size,
            request_content_length=request.content_length,
            has_body=request.more_body,
            expect_continue=False,  # HTTP.sys answers Expect: 100-continue itself
            start_time=loop.time(),
            wall_time=time.time(),
        )
        if request.body:
            self.stream.body_arrived(request.body)
        self._waiters: list[asyncio.Future[None]] = []
        self._pulling = False
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._final = False  # the app has ended the response
        self._flushing = False
        self._head_sent = False
        self._final_sent = False
        self._chunked = False
        self._disconnect = False
        self._send_anyway = False  # a refusal (413) or a Wine "reset", sent though aborted
        self.finished = False

    # -- waiting --------------------------------------------------------------------------

    async def wait(self) -> None:
        waiter = self.server.loop.create_future()
        self._waiters.append(waiter)
        await waiter

    def wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    @property
    def active(self) -> bool:
        return not self.finished or self._flushing

    # -- StreamOwner: the request body ----------------------------------------------------

    def stream_read_started(self, stream: HttpStream, now: float | None) -> None:
        limit = stream.max_request_body_size
        length = self.request.content_length
        if limit is not None and (
            (length is not None and length > limit) or stream.body_received > limit
        ):
            self._refuse_too_large()
            return
        self._pull_more()

    def stream_body_consumed(self, stream: HttpStream, now: float | None) -> None:
        self._pull_more()

    def _pull_more(self) -> None:
        stream = self.stream
        if self._pulling or stream.body_complete_flag or stream.aborted_flag:
            return
        if stream.body_buffered > BODY_BUFFER_LIMIT:
            return  # stream_body_consumed starts us again
        self._pulling = True
        self.server.spawn(self._pull_body())

    async def _pull_body(self) -> None:
        server, stream = self.server, self.stream
        buffer = create_string_buffer(BODY_READ_SIZE)
        try:
            while not stream.body_complete_flag and not stream.aborted_flag:
                if stream.body_buffered > BODY_BUFFER_LIMIT:
                    return
                code, count = await server.iocp.call(
                    server.queue,
                    lambda ov: server.api.HttpReceiveRequestEntityBody(
                        server.queue, self.request.request_id, 0, buffer, BODY_READ_SIZE, None,
                        byref(ov),
                    ),
                    buffer,
                )  # fmt: skip
                if code == b.NO_ERROR and count:
                    stream.body_arrived(buffer.raw[:count])
                    limit = stream.max_request_body_size
                    if limit is not None and stream.body_received > limit:
                        self._refuse_too_large()
                elif code in (b.NO_ERROR, b.ERROR_HANDLE_EOF):
                    stream.body_complete_flag = True
                else:
                    log.debug("request body ended early: %s", HttpApiError("receive body", code))
                    stream.aborted_flag = True
                self.wake()
        finally:
            self._pulling = False
            self.wake()

    def _refuse_too_large(self) -> None:
        """413, then the connection closes (the rest of the body is not read)."""
        stream = self.stream
        if stream.response_started:
            stream.abort()
            return
        stream.discard_body()
        stream.status, stream.reason = 413, None
        stream.response_headers = [(b"content-type", b"text/plain; charset=utf-8")]
        self._disconnect = True
        self._send_anyway = True  # the stream is aborted for the app, not for this answer
        self.stream_send(stream, b"Request body too large\n", True, None)
        stream.aborted_flag = True  # the app sees a disconnect; its response is not wanted
        self.wake()

    # -- StreamOwner: the response --------------------------------------------------------

    def stream_send(
        self,
        stream: HttpStream,
        data: bytes,
        end: bool,
        now: float | None,
        trailers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if not stream.response_started:
            stream.begin_response()
            stream.response_started = True
        if data and stream.body_allowed:
            self._pending.append(data)
            self._pending_size += len(data)
        if end:
            stream.response_complete = True
            self._final = True
        # Without HttpSendResponseEntityBody (Wine 8) a streamed body is sent whole at the end.
        if end or self.server.api.supports_entity_body:
            self._schedule_flush()

    def stream_informational(
        self, stream: HttpStream, status: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        log.debug("HTTP.sys cannot send %d informational responses; dropped", status)

    def stream_can_write(self, stream: HttpStream) -> bool:
        return not stream.aborted_flag and self._pending_size < SEND_HIGH_WATER

    def stream_abort(self, stream: HttpStream) -> None:
        self.wake()
        if self._final_sent:
            return
        server = self.server
        if server.api.supports_cancel_request:
            server.api.HttpCancelHttpRequest(server.queue, self.request.request_id, None)
        elif not self._head_sent and not self._flushing:
            # Wine 8 has no HttpCancelHttpRequest, and nothing has gone out yet: a bare 500 with
            # the connection closed is the nearest thing to a reset.
            self._pending, self._pending_size, self._final = [], 0, True
            stream.status, stream.response_headers = 500, []
            self._disconnect = True
            self._send_anyway = True
            self._schedule_flush()

    def stream_can_transmit_file(self, stream: HttpStream) -> bool:
        # Files go through as memory chunks: Wine refuses HttpDataChunkFromFileHandle.
        return False

    def stream_transmit_file(
        self, stream: HttpStream, segment: FileSegment, end: bool, now: float | None
    ) -> None:
        raise LocalProtocolError("the httpsys adapter sends files in pieces, not raw")

    def stream_file_transmitted(self, stream: HttpStream, now: float | None) -> None:
        raise LocalProtocolError("the httpsys adapter sends files in pieces, not raw")

    def stream_finished(self, stream: HttpStream) -> None:
        self.finished = True
        self.server.exchange_done(self)

    def _schedule_flush(self) -> None:
        if not self._flushing and (self._send_anyway or not self.stream.aborted_flag):
            self._flushing = True
            self.server.spawn(self._flush())

    def _response_headers(self, final: bool, body_size: int) -> list[tuple[bytes, bytes]]:
        stream, server = self.stream, self.server
        headers = list(stream.response_headers)
        names = {name.lower() for name, _ in headers}
        server_header = server.options.engine.server_header
        if server_header and b"server" not in names:
            headers.append((b"server", server_header.encode("ascii")))
        if stream.status == 401 and b"www-authenticate" not in names:
            headers += [(b"www-authenticate", c) for c in server.settings.challenges()]
        framed = b"content-length" in names or b"transfer-encoding" in names
        if framed or not stream.body_allowed:
            return headers
        if final:
            headers.append((b"content-length", b"%d" % body_size))
        elif stream.http_version == "1.1":
            headers.append((b"transfer-encoding", b"chunked"))
            self._chunked = True
        elif stream.http_version != "2":
            self._disconnect = True  # HTTP/1.0: the end of the connection ends the body
        return headers

    async def _flush(self) -> None:
        server, stream = self.server, self.stream
        api, queue, request_id = server.api, server.queue, self.request.request_id
        try:
            while self._send_anyway or not stream.aborted_flag:
                if self._head_sent and not self._pending and not self._final:
                    break
                chunks, self._pending, self._pending_size = self._pending, [], 0
                final = self._final
                size = sum(len(chunk) for chunk in chunks)
                head_sent = self._head_sent
                if not head_sent:
                    headers = self._response_headers(final, size)  # decides _chunked
                if self._chunked:
                    chunks = [piece for chunk in chunks for piece in chunk_frame(chunk)]
                    if final:
                        chunks.append(LAST_CHUNK)
                flags = 0 if final else b.HTTP_SEND_RESPONSE_FLAG_MORE_DATA
                if final and self._disconnect:
                    flags |= b.HTTP_SEND_RESPONSE_FLAG_DISCONNECT
                if not head_sent:
                    cache = None
                    if final and server.settings.enable_response_caching:
                        cache = kernel_cache_seconds(
                            stream.method, stream.status, headers, stream.wall_time
                        )
                    buffers = ResponseBuffers(
                        stream.status,
                        stream.reason.encode("latin-1") if stream.reason else None,
                        headers,
                        chunks,
                        http_version=(1, 1),
                        cache_seconds=cache,
                    )
                    self._head_sent = True
                    code, _ = await server.iocp.call(
                        queue,
                        lambda ov, flags=flags, buffers=buffers: api.HttpSendHttpResponse(
                            queue, request_id, flags, buffers.address,
                            buffers.cache_policy_address, None, None, 0, byref(ov), None,
                        ),
                        buffers,
                    )  # fmt: skip
                else:
                    entity = EntityChunks(chunks)
                    code, _ = await server.iocp.call(
                        queue,
                        lambda ov, flags=flags, entity=entity: api.HttpSendResponseEntityBody(
                            queue, request_id, flags, entity.chunk_count, entity.chunks_address,
                            None, None, 0, byref(ov), None,
                        ),
                        entity,
                    )  # fmt: skip
                stream.bytes_sent += size
                if code != b.NO_ERROR:
                    log.debug("response to %r not sent: %s", stream, HttpApiError("send", code))
                    stream.aborted_flag = True
                    break
                self.wake()
                if final:
                    self._final_sent = True
                    stream.run_on_completed()
                    server.observer.response_completed(stream)
                    break
        finally:
            self._flushing = False
            self.wake()
            if self.finished:
                server.exchange_done(self)

    # -- the app --------------------------------------------------------------------------

    async def _send_opened_file(self, stream: HttpStream, opened: OpenedFile, end: bool) -> None:
        """A pathsend/zerocopysend range, read in pieces (Wine refuses file-handle chunks).
        Nothing to flush after a write: ``stream_send`` schedules the HTTP.sys calls itself."""
        await write_file_through_stream(
            stream,
            opened,
            end,
            now=self.server.loop.time,
            until_writable=self._until_writable,
            flush=_nothing,
        )

    async def _until_writable(self, stream: HttpStream) -> None:
        while not stream.can_write and not stream.aborted_flag:
            await self.wait()

    async def run_asgi(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        loop, stream = self.server.loop, self.stream
        cycle = AsgiHttpCycle(stream)

        async def receive() -> Any:
            while True:
                message = cycle.receive(loop.time())
                if message is not None:
                    return message
                await self.wait()

        async def send(message: Any) -> None:
            while not stream.can_write and not stream.aborted_flag:  # inline: once per message
                await self.wait()
            if not cycle.send(message, loop.time()) and cycle.pending_file is not None:
                await send_file_body(cycle, self._send_opened_file)

        try:
            await app(scope, receive, send)
        except ClientDisconnected:
            log.debug("client went away during %r", stream)
        except Exception:
            log_app_exception("ASGI", stream)
        finally:
            problem = cycle.app_finished(loop.time())
            if problem:
                log_app_problem(stream, problem)


class HttpSysServer(ServesUntilStopped):
    """What ``apps/hosting.py`` expects of an adapter, on HTTP.sys."""

    def __init__(self, app: ASGIApp, options: ServerOptions, api: HttpApi | None = None) -> None:
        # On other platforms: one ConfigError line. The tests pass a fake kernel as ``api``.
        self.api = api if api is not None else HttpApi.load()
        self.app = app
        self.options = options
        self.settings: HttpSysOptions = getattr(options, "httpsys", None) or HttpSysOptions()
        self.prefixes: tuple[UrlPrefix, ...] = parse_url_prefixes(options.urls)
        self.table: PrefixTable[int] = PrefixTable(
            (prefix, index) for index, prefix in enumerate(self.prefixes)
        )
        # The URL context registered with each prefix is its index; its own table gives the
        # path base, since HTTP.sys has already decided the prefix.
        self._own_tables = [PrefixTable([(prefix, i)]) for i, prefix in enumerate(self.prefixes)]
        self.interface = resolve_interface(app, options.interface)
        if self.interface != "asgi":
            raise ConfigError(
                "the httpsys adapter serves ASGI apps; serve WSGI apps with --adapter asyncio "
                "or threads (or wrap the app in an ASGI adapter)"
            )
        self.observer = LoggingObserver(options.access_log)
        self.extensions: dict[str, Any] = {}
        self.lifespan = Lifespan(app, options.lifespan, self.extensions)
        self.lifespan_state: dict[str, Any] | None = None
        self.addresses: list[str] = [prefix.canonical for prefix in self.prefixes]
        self.endpoints = None  # no certificates of ours: HTTP.sys takes them from netsh
        self.listeners: list[Any] = []
        self.connections: set[Any] = set()
        self.exchanges: set[_Exchange] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._acceptors: list[asyncio.Task[None]] = []
        self.stopping = False
        self._stopped = False
        self._stop_requested: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self.queue = 0
        self._session = 0
        self._groups: list[int] = []
        self._initialized = False
        self.iocp: _CompletionPort
        self.loop: asyncio.AbstractEventLoop

    # -- start ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        try:
            self._open_http_sys()
            self.iocp = _CompletionPort(self.api, self.loop)
            self.api.associate(self.iocp.port, self.queue, QUEUE_KEY)
            self.extensions[ADDRESSES_EXTENSION] = {"addresses": list(self.addresses)}
            self.extensions.update(FILE_EXTENSIONS)
            await self.lifespan.startup(lambda fn, *args: self.spawn(fn(*args)))
        except BaseException:
            self._close_http_sys()
            if hasattr(self, "iocp"):
                self.iocp.close()
            raise
        self.lifespan_state = self.lifespan.state if self.lifespan.mode != "off" else None
        accepts = range(self.settings.accepts)
        self._acceptors = [self.loop.create_task(self._accept()) for _ in accepts]

    def _call(self, name: str, *args: Any) -> None:
        self.api.check(name, getattr(self.api, name)(*args))

    def _open_http_sys(self) -> None:
        api, settings, version = self.api, self.settings, HttpApi.version()
        self._call("HttpInitialize", version, b.HTTP_INITIALIZE_SERVER, None)
        self._initialized = True
        name = settings.request_queue_name
        handle = b.HANDLE()
        mode = settings.request_queue_mode
        if mode in ("create", "createorattach"):
            code = api.HttpCreateRequestQueue(version, name, None, 0, byref(handle))
            if code == b.ERROR_ALREADY_EXISTS and mode == "createorattach":
                mode = "attach"
            elif code == b.ERROR_ALREADY_EXISTS:
                raise BindError(
                    f"the request queue {name!r} exists already; use --httpsys-queue-mode "
                    "attach or createorattach, or another name"
                )
            else:
                self._raise_for(code, "HttpCreateRequestQueue", name or "(anonymous)")
        if mode == "attach":
            code = api.HttpCreateRequestQueue(
                version, name, None, b.HTTP_CREATE_REQUEST_QUEUE_FLAG_OPEN_EXISTING, byref(handle)
            )
            self._raise_for(code, "HttpCreateRequestQueue (attach)", name or "")
            self.queue = handle.value or 0
            log.info("attached to the request queue %r; its owner's URLs and options apply", name)
            return
        self.queue = handle.value or 0
        session = ctypes.c_uint64()
        self._call("HttpCreateServerSession", version, byref(session), 0)
        self._session = session.value
        self._set_queue_properties()
        for index, prefix in enumerate(self.prefixes):
            group = ctypes.c_uint64()
            self._call("HttpCreateUrlGroup", self._session, byref(group), 0)
            self._groups.append(group.value)
            binding_info = b.HTTP_BINDING_INFO(b.HTTP_PROPERTY_FLAGS(1), self.queue)
            self._set_group(group.value, b.HttpServerBindingProperty, binding_info)
            self._set_group_options(group.value)
            code = api.HttpAddUrlToUrlGroup(group.value, _registered_url(prefix), index, 0)
            self._raise_for(code, "HttpAddUrlToUrlGroup", prefix.text)

    def _raise_for(self, code: int, call: str, what: str) -> None:
        if code == b.NO_ERROR:
            return
        if code in (b.ERROR_SHARING_VIOLATION, b.ERROR_ALREADY_EXISTS):
            raise BindError(f"cannot register {what}: another process has it (Win32 error {code})")
        if code == b.ERROR_ACCESS_DENIED and call.startswith("HttpCreateRequestQueue"):
            raise ConfigError(
                f"cannot open the request queue {what}: access denied; it belongs to another "
                "user (run as that user, or let this process create it)"
            )
        if code == b.ERROR_ACCESS_DENIED:
            raise ConfigError(
                f"cannot register {what}: access denied; reserve it with "
                f'netsh http add urlacl url={what} user="%USERDOMAIN%\\%USERNAME%" '
                "or run as an administrator"
            )
        raise ConfigError(f"cannot register {what}: {HttpApiError(call, code).strerror}")

    def _set_group(self, group: int, prop: int, info: ctypes.Structure) -> None:
        code = self.api.HttpSetUrlGroupProperty(group, prop, byref(info), ctypes.sizeof(info))
        if code != b.NO_ERROR:
            raise ConfigError(
                f"HTTP.sys refused an option (HttpSetUrlGroupProperty {prop}): "
                f"{HttpApiError('HttpSetUrlGroupProperty', code).strerror}"
            )

    def _set_group_options(self, group: int) -> None:
        settings = self.settings
        if settings.max_connections is not None:
            limit = 0xFFFFFFFF if settings.max_connections == -1 else settings.max_connections
            info = b.HTTP_CONNECTION_LIMIT_INFO(b.HTTP_PROPERTY_FLAGS(1), limit)
            qos = b.HTTP_QOS_SETTING_INFO(b.HttpQosSettingTypeConnectionLimit, addressof(info))
            self._set_group(group, b.HttpServerQosProperty, qos)
        if settings.authentication_schemes:
            auth = b.HTTP_SERVER_AUTHENTICATION_INFO()
            auth.Flags.Present = 1
            auth.AuthSchemes = settings.auth_scheme_flags
            auth.ReceiveContextHandle = 1  # the access token names the user
            self._set_group(group, b.HttpServerAuthenticationProperty, auth)

    def _set_queue_properties(self) -> None:
        settings = self.settings
        wanted: list[tuple[int, int, str]] = []
        if settings.request_queue_limit is not None:
            wanted.append((b.HttpServerQueueLengthProperty, settings.request_queue_limit, "limit"))
        if settings.http503_verbosity != "basic":
            verbosity = VERBOSITIES[settings.http503_verbosity]
            wanted.append((b.HttpServer503VerbosityProperty, verbosity, "503 verbosity"))
        for prop, value, what in wanted:
            cell = ctypes.c_uint32(value)
            code = self.api.HttpSetRequestQueueProperty(self.queue, prop, byref(cell), 4, 0, None)
            if code != b.NO_ERROR:
                raise ConfigError(
                    f"HTTP.sys refused the request queue {what}: "
                    f"{HttpApiError('HttpSetRequestQueueProperty', code).strerror}"
                )

    # -- requests -------------------------------------------------------------------------

    async def _accept(self) -> None:
        api, queue = self.api, self.queue
        while not self.stopping:
            size, request_id = FIRST_RECEIVE_SIZE, 0
            while True:
                buffer = create_string_buffer(size)
                code, needed = await self.iocp.call(
                    queue,
                    lambda ov, buffer=buffer, size=size, rid=request_id: api.HttpReceiveHttpRequest(
                        queue, rid, b.HTTP_RECEIVE_REQUEST_FLAG_COPY_BODY, buffer, size, None,
                        byref(ov),
                    ),
                    buffer,
                )  # fmt: skip
                if code != b.ERROR_MORE_DATA:
                    break
                request_id = b.HTTP_REQUEST_V2.from_buffer(buffer).RequestId
                size = max(needed, size * 2)
            if code == b.NO_ERROR:
                self._start_exchange(parse_request(addressof(buffer), api.token_user))
                continue
            if self.stopping or code == b.ERROR_OPERATION_ABORTED:
                return
            elif code != b.ERROR_CONNECTION_INVALID:  # the client left before we read it all
                log.error("%s", HttpApiError("HttpReceiveHttpRequest", code))
                await asyncio.sleep(0.1)

    def _start_exchange(self, request: ParsedRequest) -> None:
        if not 0 <= request.url_context < len(self.prefixes):
            match = None
        else:
            match = self._own_tables[request.url_context].match(
                request.scheme, (request.header(b"host") or b"").decode("latin-1"),
                self.prefixes[request.url_context].port, request.path,
                request.local_address[0] if request.local_address else None,
            )  # fmt: skip
        if match is None:  # Wine routes every path of a port to its one URL; Windows 404s
            match = self.table.match(
                request.scheme, (request.header(b"host") or b"").decode("latin-1"),
                request.local_address[1] if request.local_address else 0, request.path,
                request.local_address[0] if request.local_address else None,
            )  # fmt: skip
        path_base, path = (match.path_base, match.remaining_path) if match else ("", request.path)
        exchange = _Exchange(self, request, path_base, path)
        self.exchanges.add(exchange)
        assert self._idle is not None
        self._idle.clear()
        stream = exchange.stream
        if match is None:
            self._answer(exchange, 404, b"Not Found\n")
        elif not self.settings.allow_anonymous and request.authentication is None:
            self._answer(exchange, 401, b"")
        else:
            extensions = self.extensions
            if request.authentication is not None:
                auth = request.authentication
                extensions = {
                    **extensions,
                    AUTHENTICATION_EXTENSION: {"scheme": auth.scheme, "user": auth.user},
                }
            scope = http_scope(stream, self.lifespan_state, extensions)
            task = self.loop.create_task(exchange.run_asgi(self.app, scope))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _answer(self, exchange: _Exchange, status: int, body: bytes) -> None:
        """Answer without the app (no matching prefix, authentication required)."""
        stream = exchange.stream
        stream.status = status
        stream.response_headers = [(b"content-type", b"text/plain; charset=utf-8")]
        stream.complete(body)
        stream.finish()

    def exchange_done(self, exchange: _Exchange) -> None:
        if not exchange.active:
            self.exchanges.discard(exchange)
            if not self.exchanges and self._idle is not None:
                self._idle.set()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- stop -----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop receiving (CancelIoEx), finish requests in flight, then close everything."""
        if self._stopped or not hasattr(self, "loop"):
            return
        self._stopped = True
        self.stopping = True
        for task in self._acceptors:
            task.cancel()  # iocp.call passes it on with CancelIoEx
        if self.exchanges and self._idle is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.options.shutdown_timeout)
        if self.exchanges:
            log.warning(
                "shutdown timeout (%gs): aborting %d request(s)",
                self.options.shutdown_timeout,
                len(self.exchanges),
            )
            for exchange in list(self.exchanges):
                exchange.stream.abort()
        for task in [*self.tasks, *self._acceptors]:
            task.cancel()
        for task in [*self.tasks, *self._acceptors]:
            with contextlib.suppress(BaseException):
                await task
        await self.lifespan.shutdown()
        if self.api.supports_shutdown_queue and self.queue:
            self.api.HttpShutdownRequestQueue(self.queue)
        if self.queue:
            self.api.cancel_io(self.queue, None)
        await self.iocp.drain(2.0)
        self._close_http_sys()
        self.iocp.close()
        if self._stop_requested is not None:
            self._stop_requested.set()

    def _close_http_sys(self) -> None:
        api = self.api
        for group in self._groups:
            api.HttpCloseUrlGroup(group)
        self._groups.clear()
        if self.queue:
            api.HttpCloseRequestQueue(self.queue)
            self.queue = 0
        if self._session:
            api.HttpCloseServerSession(self._session)
            self._session = 0
        if self._initialized:
            api.HttpTerminate(b.HTTP_INITIALIZE_SERVER, None)
            self._initialized = False

    # -- run: the command's entry point ---------------------------------------------------

    def run(self, on_started: Callable[[list[str]], None] | None = None) -> None:
        asyncio.run(self._run(on_started))

    async def _run(self, on_started: Callable[[list[str]], None] | None) -> None:
        loop = asyncio.get_running_loop()
        signals_seen = 0

        def on_signal(signum: int, frame: object) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen == 1:
                log.info("shutting down (finishing requests in flight; signal again to force)")
                loop.call_soon_threadsafe(self.request_stop)
            else:
                log.warning("forced shutdown")
                loop.call_soon_threadsafe(self._force)

        wanted = [signal.SIGINT, signal.SIGTERM]
        if hasattr(signal, "SIGBREAK"):
            wanted.append(signal.SIGBREAK)  # Ctrl+Break, and what a console close sends
        previous = {sig: signal.signal(sig, on_signal) for sig in wanted}
        try:
            await self.start()
            if on_started is not None:
                on_started(list(self.addresses))
            await self.serve_started()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _force(self) -> None:
        for exchange in list(self.exchanges):
            exchange.stream.abort()
        self.request_stop()


def _nothing() -> None:
    pass


def _registered_url(prefix: UrlPrefix) -> str:
    """The prefix as HTTP.sys wants it: host as written (``+``, ``*``, a name, an IP)."""
    host = f"[{prefix.host}]" if ":" in prefix.host else prefix.host
    return f"{prefix.scheme}://{host}:{prefix.port}{prefix.path}"
