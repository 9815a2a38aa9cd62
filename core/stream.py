"""One request/response exchange on a connection: the engine's implementation of every
per-request feature.

A stream holds the parsed request, the body bytes received and not yet read, and the response
the app has set. It decides nothing about framing or timing itself: every operation that affects
the wire is passed to its owner (the HTTP/1.1 or HTTP/2 protocol object), which knows the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .errors import LocalProtocolError
from .headers import HeaderFacts, header_facts

if TYPE_CHECKING:
    from .context import TransportInfo
    from .files import FileSegment

Headers = list[tuple[bytes, bytes]]

_NO_BODY_STATUSES = frozenset({204, 304})


class ClientDisconnected(OSError):
    """Raised when the app writes to a response whose client has gone away."""


class StreamOwner(Protocol):
    def stream_read_started(self, stream: HttpStream, now: float | None) -> None: ...

    def stream_body_consumed(self, stream: HttpStream, now: float | None) -> None: ...

    def stream_send(
        self,
        stream: HttpStream,
        data: bytes,
        end: bool,
        now: float | None,
        trailers: Headers | None = None,
    ) -> None: ...

    def stream_informational(self, stream: HttpStream, status: int, headers: Headers) -> None: ...

    def stream_abort(self, stream: HttpStream) -> None: ...

    def stream_can_write(self, stream: HttpStream) -> bool: ...

    def stream_finished(self, stream: HttpStream) -> None: ...

    def stream_can_transmit_file(self, stream: HttpStream) -> bool: ...

    def stream_transmit_file(
        self, stream: HttpStream, segment: FileSegment, end: bool, now: float | None
    ) -> None: ...

    def stream_file_transmitted(self, stream: HttpStream, now: float | None) -> None: ...


class HttpStream:
    __slots__ = (
        "_body",
        "_body_size",
        "_max_request_body_size",
        "_on_completed",
        "_on_starting",
        "_owner",
        "_read_started",
        "aborted_flag",
        "body_complete_flag",
        "body_received",
        "bytes_sent",
        "connection_id",
        "expect_continue",
        "flow_controlled",
        "headers",
        "http_version",
        "local_address",
        "method",
        "path",
        "path_base",
        "query_string",
        "raw_path",
        "raw_target",
        "reason",
        "remote_address",
        "request_content_length",
        "response_complete",
        "response_headers",
        "response_started",
        "scheme",
        "start_time",
        "status",
        "stream_id",
        "transmitting_file",
        "wall_time",
    )

    def __init__(  # noqa: PLR0917 - positional on purpose: see Http1Protocol._start_stream
        self,
        owner: StreamOwner,
        stream_id: int,
        method: str,
        scheme: str,
        http_version: str,
        raw_target: bytes,
        raw_path: bytes,
        path: str,
        query_string: bytes,
        headers: Headers,
        path_base: str,
        connection_id: str,
        transport: TransportInfo,
        max_request_body_size: int | None,
        request_content_length: int | None,
        has_body: bool,
        expect_continue: bool,
        start_time: float,
        wall_time: float,
    ) -> None:
        self._owner = owner
        self.stream_id = stream_id
        self.method = method
        self.scheme = scheme
        self.http_version = http_version
        # HTTP/2 streams have their own send window and buffer, so ``can_write`` can be false
        # for one stream while others write; an HTTP/1.1 stream is only ever held back by its
        # transport. Adapters read this before asking ``can_write`` (a call to the owner).
        self.flow_controlled = http_version == "2"
        self.raw_target = raw_target
        self.raw_path = raw_path
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.path_base = path_base
        self.connection_id = connection_id
        self.local_address = transport.local_address
        self.remote_address = transport.remote_address
        self._max_request_body_size = max_request_body_size
        self.request_content_length = request_content_length
        self.expect_continue = expect_continue
        self.start_time = start_time
        self.wall_time = wall_time
        self._body: list[bytes] = []
        self._body_size = 0
        self.body_received = 0
        self.body_complete_flag = not has_body
        self._read_started = False
        self.aborted_flag = False
        self.status = 200
        self.reason: str | None = None
        self.response_headers: Headers = []
        self.response_started = False
        self.response_complete = False
        self.bytes_sent = 0
        # A file range handed to the adapter and not yet reported written (core/files.py).
        self.transmitting_file = False
        # Made on first use: most requests register no callbacks.
        self._on_starting: list[Callable[[], None]] | None = None
        self._on_completed: list[Callable[[], None]] | None = None

    def __repr__(self) -> str:
        return f"<HttpStream {self.stream_id} {self.method} {self.raw_target!r}>"

    @property
    def protocol(self) -> str:
        """``HTTP/1.1``, ``HTTP/2``: what the access log and WSGI's SERVER_PROTOCOL show."""
        return "HTTP/" + self.http_version

    # -- request feature ------------------------------------------------------------------

    @property
    def body_complete(self) -> bool:
        """True once the whole body has been received (it may still be waiting to be read)."""
        return self.body_complete_flag

    @property
    def body_buffered(self) -> int:
        return self._body_size

    @property
    def read_started(self) -> bool:
        return self._read_started

    def read_body(self, now: float | None = None) -> bytes:
        if not self._read_started:
            self._read_started = True
            self._owner.stream_read_started(self, now)
        if self.aborted_flag:
            # The engine refused the request (413) or the client left: nothing to hand over.
            self.discard_body()
            return b""
        if not self._body:
            return b""
        data = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body.clear()
        self._body_size = 0
        self._owner.stream_body_consumed(self, now)
        return data

    # Called by the owner.
    def body_arrived(self, data: bytes) -> None:
        self._body.append(data)
        self._body_size += len(data)
        self.body_received += len(data)

    def discard_body(self) -> None:
        self._body.clear()
        self._body_size = 0

    # -- max request body size feature ------------------------------------------------------

    @property
    def is_read_only(self) -> bool:
        return self._read_started

    @property
    def max_request_body_size(self) -> int | None:
        return self._max_request_body_size

    @max_request_body_size.setter
    def max_request_body_size(self, value: int | None) -> None:
        self.set_max_request_body_size(value)

    def set_max_request_body_size(self, value: int | None) -> None:
        if self._read_started:
            raise LocalProtocolError(
                "the max request body size cannot change after the app started reading the body"
            )
        if value is not None and value < 0:
            raise LocalProtocolError(f"max request body size must be >= 0 or None (got {value})")
        self._max_request_body_size = value

    # -- response features ------------------------------------------------------------------

    @property
    def has_started(self) -> bool:
        return self.response_started

    def on_starting(self, callback: Callable[[], None]) -> None:
        if self.response_started:
            raise LocalProtocolError("on_starting after the response has started")
        if self._on_starting is None:
            self._on_starting = []
        self._on_starting.append(callback)

    def on_completed(self, callback: Callable[[], None]) -> None:
        if self._on_completed is None:
            self._on_completed = []
        self._on_completed.append(callback)

    def run_on_starting(self) -> None:
        # ASP.NET runs these in reverse order of registration.
        callbacks, self._on_starting = self._on_starting or (), None
        for callback in reversed(callbacks):
            callback()

    def run_on_completed(self) -> None:
        if not self._on_completed:
            return
        callbacks, self._on_completed = self._on_completed, None
        for callback in reversed(callbacks):
            callback()

    @property
    def body_allowed(self) -> bool:
        """Whether the response may carry a body (not for HEAD, 204 or 304)."""
        return self.method != "HEAD" and self.status not in _NO_BODY_STATUSES

    def begin_response(self) -> HeaderFacts:
        """What every protocol does before the head goes out: run the on-starting callbacks
        (they may still change the response), then check the status and headers."""
        if self._on_starting:
            self.run_on_starting()
        status = self.status
        if not isinstance(status, int) or not 200 <= status <= 999:
            raise LocalProtocolError(
                f"response status must be an int from 200 to 999 (got {status!r})"
            )
        return header_facts(self.response_headers)

    @property
    def can_write(self) -> bool:
        return self._owner.stream_can_write(self)

    def _check_writable(self) -> None:
        if self.aborted_flag:
            raise ClientDisconnected("the client has disconnected")
        if self.response_complete:
            raise LocalProtocolError("the response is already complete")

    def start(self, now: float | None = None) -> None:
        self._check_writable()
        if not self.response_started:
            self._owner.stream_send(self, b"", False, now)

    def write(self, data: bytes, now: float | None = None) -> None:
        if self.aborted_flag or self.response_complete:
            self._check_writable()  # raises the right error
        self._owner.stream_send(self, data, False, now)

    def complete(
        self, data: bytes = b"", now: float | None = None, trailers: Headers | None = None
    ) -> None:
        """Write the last bytes and end the response, with trailers if the protocol allows."""
        if self.aborted_flag or self.response_complete:
            self._check_writable()  # raises the right error
        self._owner.stream_send(self, data, True, now, trailers)

    @property
    def can_transmit_file(self) -> bool:
        """Whether ``transmit_file`` may be used: the file's bytes can go to the transport raw."""
        return self._owner.stream_can_transmit_file(self)

    def transmit_file(self, segment: FileSegment, end: bool, now: float | None = None) -> None:
        """Send a file range as (part of) the body; only when ``can_transmit_file``. The adapter
        writes it; ``transmitting_file`` stays True until it has (see core/files.py)."""
        self._check_writable()
        if self.transmitting_file:
            raise LocalProtocolError("a file is still being sent on this stream")
        if segment.offset < 0 or segment.count < 0:
            raise LocalProtocolError(f"bad file range: offset and count must be >= 0 ({segment})")
        self._owner.stream_transmit_file(self, segment, end, now)

    def file_transmitted(self, now: float | None = None) -> None:
        """The adapter has written the file range given to ``transmit_file`` to the transport."""
        if not self.transmitting_file:
            raise LocalProtocolError("file_transmitted without a file being sent")
        self.transmitting_file = False
        self._owner.stream_file_transmitted(self, now)

    @property
    def accepts_trailers(self) -> bool:
        """The client said it takes response trailers (``te: trailers``)."""
        for name, value in self.headers:  # noqa: SIM110 - per request: any() costs a generator
            if name == b"te" and b"trailers" in value.lower():
                return True
        return False

    def send_informational(self, status: int, headers: Headers) -> None:
        """A 1xx response (103 Early Hints, say) before the final one."""
        self._check_writable()
        if self.response_started:
            raise LocalProtocolError("an informational response must come before the final one")
        if not 100 <= status <= 199 or status == 101:
            raise LocalProtocolError(
                f"informational status must be 100-199 and not 101 (got {status})"
            )
        self._owner.stream_informational(self, status, headers)

    # -- request lifetime feature -------------------------------------------------------------

    @property
    def aborted(self) -> bool:
        return self.aborted_flag

    def finish(self) -> None:
        """The host is done with this stream: its app returned or raised. Call exactly once."""
        self._owner.stream_finished(self)

    def abort(self) -> None:
        """Abort the exchange: the client sees the connection (or stream) reset."""
        if not self.aborted_flag:
            self.aborted_flag = True
            self._owner.stream_abort(self)
