"""WSGI (PEP 3333) translation, without any blocking of its own.

A WSGI app is synchronous: it blocks while it reads the request body and while it writes the
response. The engine is sans-IO and not thread-safe, so the blocking and the hop to the thread
that owns the connection are the host's part, injected as a ``WsgiHost``:

- ``call(fn)`` runs ``fn`` where the engine may be touched (the connection's thread; the
  event loop's thread for an async adapter), sends what the engine produced, and returns
  ``fn``'s result or raises its exception. Every stream operation here goes through it.
- ``wait_for_body(stream)`` blocks until the stream has body bytes waiting, its body is
  complete, or it was aborted.
- ``wait_writable(stream)`` blocks while the stream cannot take more response bytes (a full
  HTTP/2 window or send buffer, a socket the peer does not read) and returns once it can or
  once it was aborted.
- ``now()`` is the engine's monotonic clock; it is only called inside ``call``.

``WsgiCycle`` ties it together for one request: it builds the environ (``wsgi_environ``), the
streaming ``wsgi.input`` (``WsgiInput``), and the ``start_response``/``write`` side
(``WsgiResponse``). The host runs ``cycle.run()`` on the app's thread, logs what it raised, then
calls ``cycle.app_finished(now)`` on the engine's thread, which mends what the app left undone
(a 500 when nothing was sent, a reset when the body stopped halfway) and releases the stream.

The request body is never buffered whole: ``wsgi.input`` hands over what the engine has
received, and the engine stops reading from the socket while more than
``max_request_buffer_size`` bytes wait unread (back-pressure reaches the client).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote_to_bytes

from .caches import BoundedCache
from .errors import LocalProtocolError
from .files import FileSegment, prepare_file_response
from .headers import validate_response_headers
from .stream import ClientDisconnected, HttpStream

T = TypeVar("T")
Headers = list[tuple[bytes, bytes]]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
OptExcInfo = ExcInfo | tuple[None, None, None]
WriteCallable = Callable[[bytes], None]
StartResponse = Callable[..., WriteCallable]
Environ = dict[str, Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]

# Blocks read from a wsgi.file_wrapper file (the app's block size is a hint, PEP 3333).
FILE_BLOCK_SIZE = 256 * 1024

# Hop-by-hop headers are the server's business (PEP 3333 forbids them in apps); dropped.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_STATUS = re.compile(r"([1-9][0-9]{2})(?: (.*))?", re.DOTALL)
_NO_BODY_STATUSES = frozenset({204, 304})


class WsgiError(LocalProtocolError):
    """The app broke a PEP 3333 rule; the message says which and how to fix it."""


class WsgiHost(Protocol):
    def now(self) -> float: ...

    def call(self, fn: Callable[[], T]) -> T: ...

    def wait_for_body(self, stream: HttpStream) -> None: ...

    def wait_writable(self, stream: HttpStream) -> None: ...


class WsgiFileHost(WsgiHost, Protocol):
    """A host that can also write a file range to the transport raw (``os.sendfile``): on
    the app's thread, after the engine accepted ``stream.transmit_file`` and its preceding bytes
    went out. Raises ClientDisconnected when the transport failed."""

    def write_file(self, stream: HttpStream, segment: FileSegment) -> None: ...


# -- the environ -----------------------------------------------------------------------------


def wsgi_string(text: str) -> str:
    """A native string as PEP 3333 wants it: the UTF-8 bytes, decoded as latin-1."""
    return text if text.isascii() else text.encode("utf-8", "surrogateescape").decode("latin-1")


def _server_name_port(stream: HttpStream) -> tuple[str, str]:
    for name, value in stream.headers:
        if name == b"host" and value:
            return _host_name_port(value, stream.scheme)
    return _local_name_port(stream)


def _host_name_port(value: bytes, scheme: str) -> tuple[str, str]:
    """``SERVER_NAME`` and ``SERVER_PORT`` from a non-empty Host header (remembered: clients
    send the same few)."""
    known = _HOST_CACHE.get((value, scheme))
    if known is not None:
        return known
    default_port = "443" if scheme == "https" else "80"
    host = value.decode("latin-1")
    answer: tuple[str, str] | None = None
    if host.startswith("["):  # [v6]:port
        end = host.find("]")
        if end > 0:
            port = host[end + 2 :] if host[end + 1 : end + 2] == ":" else ""
            answer = host[: end + 1], port if port.isdigit() else default_port
    if answer is None:
        name_part, sep, port = host.rpartition(":")
        answer = (name_part, port) if sep and port.isdigit() else (host, default_port)
    return _HOST_CACHE.remember((value, scheme), answer)


def _local_name_port(stream: HttpStream) -> tuple[str, str]:
    """No Host header: the address the request came in on."""
    local = stream.local_address
    if isinstance(local, tuple):
        host = local[0]
        return (f"[{host}]" if ":" in host else host), str(local[1])
    return "localhost", "443" if stream.scheme == "https" else "80"  # a unix socket


# What requests repeat (core/caches.py): Host values, header names, status lines, header lists.
_HOST_CACHE: BoundedCache[tuple[bytes, str], tuple[str, str]] = BoundedCache()
# A request header's lower-case name -> its environ key; "" for those left out.
_ENVIRON_KEYS: BoundedCache[bytes, str] = BoundedCache()


def _environ_key(raw_name: bytes) -> str:
    name = raw_name.decode("latin-1")
    if raw_name == b"content-length" or "_" in name:
        key = ""
    elif name == "content-type":
        key = "CONTENT_TYPE"
    else:
        key = "HTTP_" + name.upper().replace("-", "_")
    return _ENVIRON_KEYS.remember(raw_name, key)


def wsgi_environ(
    stream: HttpStream,
    wsgi_input: Any,
    errors: Any,
    extra: dict[str, Any] | None = None,
) -> Environ:
    """The PEP 3333 environ for one request, from the stream's request features.

    ``PATH_INFO`` is the percent-decoded path as a WSGI string (its bytes decoded as latin-1),
    without ``SCRIPT_NAME`` (the path base). Repeated headers are joined with ", " (cookies
    with "; "). Headers whose names contain "_" are left out, as nginx and gunicorn do: in the
    environ they would be indistinguishable from the "-" spelling a proxy may have vetted.
    """
    environ = _CONSTANT_ENVIRON.copy()
    host = _add_headers(environ, stream.headers)
    script_name = wsgi_string(stream.path_base)
    raw_path = stream.raw_path
    path_info = (unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path).decode("latin-1")
    if script_name and path_info.startswith(script_name):
        path_info = path_info[len(script_name) :]
    scheme = stream.scheme
    server_name, server_port = _host_name_port(host, scheme) if host else _local_name_port(stream)
    environ["REQUEST_METHOD"] = stream.method
    environ["SCRIPT_NAME"] = script_name
    environ["PATH_INFO"] = path_info
    environ["QUERY_STRING"] = stream.query_string.decode("latin-1")
    environ["SERVER_NAME"] = server_name
    environ["SERVER_PORT"] = server_port
    environ["SERVER_PROTOCOL"] = stream.protocol
    environ["wsgi.url_scheme"] = scheme
    environ["wsgi.input"] = wsgi_input
    environ["wsgi.errors"] = errors
    remote = stream.remote_address
    if remote is not None:
        environ["REMOTE_ADDR"] = remote[0]
        environ["REMOTE_PORT"] = str(remote[1])
    if stream.request_content_length is not None:
        environ["CONTENT_LENGTH"] = str(stream.request_content_length)
    if extra:
        environ.update(extra)
    return environ


def _add_headers(environ: Environ, headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """``add_header_variables``, and the first non-empty Host header's value, in one pass."""
    host: bytes | None = None
    keys = _ENVIRON_KEYS
    for raw_name, raw_value in headers:
        key = keys.get(raw_name)
        if key is None:
            key = _environ_key(raw_name)
        if not key:
            continue
        value = raw_value.decode("latin-1")
        previous = environ.get(key)
        if previous is not None:
            value = previous + ("; " if key == "HTTP_COOKIE" else ", ") + value
        environ[key] = value
        if host is None and key == "HTTP_HOST" and raw_value:
            host = raw_value
    return host


def add_header_variables(environ: Environ, headers: Iterable[tuple[bytes, bytes]]) -> None:
    """``CONTENT_TYPE`` and ``HTTP_*`` for the request headers (lower-case names).

    Content-Length is left to the caller, which knows the validated length. Names with "_"
    are left out, as nginx and gunicorn do: in the environ they would be indistinguishable
    from the "-" spelling a proxy may have vetted. Repeated headers are joined with ", "
    (cookies with "; ").
    """
    _add_headers(environ, headers)


class WsgiErrors:
    """``wsgi.errors``: a text stream that hands each complete line to ``sink`` (a logger)."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self._sink = sink
        self._partial = ""

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"wsgi.errors takes str (got {type(text).__name__})")
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._sink(line)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            self._sink(line)


# -- wsgi.input ------------------------------------------------------------------------------


class BodyInput:
    """A ``wsgi.input`` over pieces of a body that arrive one by one, never buffered whole.

    ``read(n)`` returns ``n`` bytes, fewer only at the end of the body (as a file does);
    ``read()`` reads to the end. A subclass supplies ``_fill()``: the next non-empty piece,
    waiting for it, or b"" at the end (setting ``_eof`` once the body is over).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._eof = False

    def _fill(self) -> bytes:
        raise NotImplementedError

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            chunks = [bytes(self._buffer)]
            self._buffer.clear()
            while chunk := self._fill():
                chunks.append(chunk)
            return b"".join(chunks)
        buffer = self._buffer
        if not buffer:
            if size == 0:
                return b""
            chunk = self._fill()
            if len(chunk) == size or (len(chunk) < size and self._eof):
                return chunk  # the common case: no copy
            buffer += chunk
        while len(buffer) < size:
            chunk = self._fill()
            if not chunk:
                break
            buffer += chunk
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = None if size is None or size < 0 else size
        buffer = self._buffer
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end >= 0:
                cut = end + 1
                break
            if limit is not None and len(buffer) >= limit:
                cut = limit
                break
            start = len(buffer)
            chunk = self._fill()
            if not chunk:
                cut = len(buffer)
                break
            buffer += chunk
        if limit is not None:
            cut = min(cut, limit)
        line = bytes(buffer[:cut])
        del buffer[:cut]
        return line

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        """Apps must not close wsgi.input (PEP 3333); tolerated, and nothing happens."""


class WsgiInput(BodyInput):
    """``wsgi.input`` from the engine's stream, read as the body arrives.

    It raises ``ClientDisconnected`` (an ``OSError``) when the client went away or the engine
    refused the body (413 after the first read, or the minimum body data rate), so an app never
    mistakes a cut-off body for a complete one.
    """

    def __init__(self, stream: HttpStream, host: WsgiHost) -> None:
        super().__init__()
        self._stream = stream
        self._host = host

    def _pull(self) -> tuple[bytes, bool, bool]:
        """On the engine's thread: (bytes waiting, aborted, body complete and all read)."""
        stream = self._stream
        data = stream.read_body(self._host.now())
        return (
            data,
            stream.aborted_flag,
            stream.body_complete_flag and not stream.body_buffered,
        )

    def _fill(self) -> bytes:
        """The next bytes of the body, waiting for them; b"" at the end."""
        if self._eof:
            return b""
        host = self._host
        while True:
            data, aborted, complete = host.call(self._pull)
            if data:
                if complete:
                    self._eof = True
                return data
            if aborted:
                self._eof = True
                raise ClientDisconnected(
                    "the request body was cut off: the client went away, or the server "
                    "refused the body (too large or too slow)"
                )
            if complete:
                self._eof = True
                return b""
            host.wait_for_body(self._stream)


# -- wsgi.file_wrapper -----------------------------------------------------------------------


class FileWrapper:
    """``wsgi.file_wrapper``. Iterating it reads the file in blocks; the host recognises it
    and sends the file in large blocks (``FILE_BLOCK_SIZE``) instead."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        return self.blocks(self.blksize)

    def blocks(self, size: int) -> Iterator[bytes]:
        read = self.filelike.read
        while data := read(size):
            yield data

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()

    def segment(self) -> FileSegment | None:
        """The rest of the file from its current position, when it is a real file whose
        bytes can be sent raw; None otherwise (a pipe, a BytesIO, a socket...)."""
        filelike = self.filelike
        try:
            fd = filelike.fileno()
            position = filelike.tell()
            size = _file_size(fd)
        except (AttributeError, OSError, ValueError):
            return None
        if size is None or not isinstance(position, int) or position > size:
            return None
        return FileSegment(filelike, position, size - position)


def _file_size(fd: int) -> int | None:
    """The size of a regular file (metadata only, no reading); None for anything else."""
    info = os.fstat(fd)
    return info.st_size if stat.S_ISREG(info.st_mode) else None


# What every environ holds; each request's starts as a copy.
_CONSTANT_ENVIRON: Environ = {
    "wsgi.version": (1, 0),
    "wsgi.multithread": True,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
    # wsgi.input ends at the end of the body (chunked or HTTP/2 bodies have no length).
    "wsgi.input_terminated": True,
    "wsgi.file_wrapper": FileWrapper,
}


# -- start_response, write(), the iterable -------------------------------------------------


def parse_status(status: Any) -> tuple[int, str | None]:
    if type(status) is str:
        known = _STATUS_CACHE.get(status)
        if known is not None:
            return known
    return _STATUS_CACHE.remember(status, _parse_status(status))


_STATUS_CACHE: BoundedCache[str, tuple[int, str | None]] = BoundedCache()


def _parse_status(status: Any) -> tuple[int, str | None]:
    if not isinstance(status, str):
        raise WsgiError(
            f"start_response: status must be a str like '200 OK' (got {type(status).__name__} "
            f"{status!r})"
        )
    match = _STATUS.fullmatch(status)
    if match is None:
        raise WsgiError(
            f"start_response: status must be three digits, a space and a reason phrase, like "
            f"'200 OK' (got {status!r})"
        )
    code = int(match.group(1))
    reason = match.group(2) or None
    if code < 200:
        raise WsgiError(
            f"start_response: status {code} is informational; WSGI responses must be 200 or above"
        )
    if reason is not None:
        try:
            encoded = reason.encode("latin-1")
        except UnicodeEncodeError:
            raise WsgiError(
                f"start_response: the reason phrase must be latin-1 text (got {reason!r})"
            ) from None
        if any((b < 0x20 and b != 0x09) or b == 0x7F for b in encoded):
            raise WsgiError(
                f"start_response: the reason phrase contains CR, LF, NUL or another control "
                f"character (got {reason!r})"
            )
    return code, reason


def parse_headers(headers: Any) -> tuple[Headers, int | None]:
    """The app's headers as the engine's byte pairs, checked; plus the Content-Length.

    Apps send the same few header lists again and again: a list seen before (equal, item by
    item, to one that passed every check) is answered from a cache."""
    key: tuple[Any, ...] | None = None
    if type(headers) is list or type(headers) is tuple:
        try:
            key = tuple(headers)
            known = _HEADERS_CACHE.get(key)
        except TypeError:  # items that are not hashable (lists): checked every time
            key = known = None
        if known is not None:
            return list(known[0]), known[1]
    out, length = _parse_headers(headers)
    if key is not None:
        _HEADERS_CACHE.remember(key, (tuple(out), length))
    return out, length


_HEADERS_CACHE: BoundedCache[
    tuple[Any, ...], tuple[tuple[tuple[bytes, bytes], ...], int | None]
] = BoundedCache()


def _parse_headers(headers: Any) -> tuple[Headers, int | None]:
    if not isinstance(headers, list | tuple):
        raise WsgiError(
            "start_response: response_headers must be a list of (name, value) tuples "
            f"(got {type(headers).__name__})"
        )
    out: Headers = []
    length: int | None = None
    for item in headers:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise WsgiError(
                f"start_response: each header must be a (name, value) tuple (got {item!r})"
            )
        name, value = item
        if not isinstance(name, str) or not isinstance(value, str):
            raise WsgiError(
                "start_response: header names and values must be native strings (str), "
                f"not {type(name).__name__}/{type(value).__name__} (got {name!r}: {value!r})"
            )
        lowered = name.lower()
        if lowered in HOP_BY_HOP:
            continue
        try:
            pair = (name.encode("latin-1"), value.strip(" \t").encode("latin-1"))
        except UnicodeEncodeError:
            raise WsgiError(
                f"start_response: header {name!r} must be latin-1 text (got {value!r})"
            ) from None
        try:
            validate_response_headers([pair])
        except LocalProtocolError as exc:
            raise WsgiError(f"start_response: {exc}") from None
        if lowered == "content-length":
            if not pair[1].isdigit() or (length is not None and length != int(pair[1])):
                raise WsgiError(
                    f"start_response: Content-Length must be one whole number (got {value!r})"
                )
            length = int(pair[1])
        out.append(pair)
    return out, length


def _as_bytes(data: Any, where: str) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise WsgiError(
        f"{where} must be bytes (got {type(data).__name__}); encode text, e.g. text.encode('utf-8')"
    )


class WsgiResponse:
    """``start_response``, the ``write()`` callable, and the app's iterable, as stream writes.

    The status line and headers go out with the first non-empty body bytes (or at the end),
    never at ``start_response`` time, so ``exc_info`` can still replace them until then. A
    declared Content-Length is held to: extra bytes are dropped, and a body that ends short
    resets the connection instead of leaving the client waiting.
    """

    def __init__(self, stream: HttpStream, host: WsgiHost) -> None:
        self._stream = stream
        self._host = host
        self.status: int | None = None
        self._reason: str | None = None
        self._headers: Headers = []
        self._length: int | None = None
        self.sent = 0
        self.headers_sent = False
        self._overflow = False
        self._ended = False
        self.problems: list[str] = []  # for the host's log

    # PEP 3333 names this argument exc_info; it must stay positional-or-keyword.
    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
    ) -> WriteCallable:
        if exc_info is not None and exc_info[1] is not None:
            try:
                if self.headers_sent:
                    # Too late to change the response: re-raise the app's error (PEP 3333).
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no reference cycle through the traceback
        elif self.status is not None:
            raise WsgiError(
                "start_response was called a second time without exc_info; call it once, or "
                "pass exc_info=sys.exc_info() from an error handler to replace the response"
            )
        code, reason = parse_status(status)
        parsed, length = parse_headers(headers)
        self.status, self._reason, self._headers, self._length = code, reason, parsed, length
        return self.write

    def write(self, data: bytes) -> None:
        """The ``write()`` callable start_response returns: send these bytes now."""
        if self.status is None:
            raise WsgiError("write() was called before start_response")
        data = _as_bytes(data, "write()")
        if data:
            self._send(data, end=False)

    def send_iterable(self, result: Iterable[bytes]) -> None:
        """Send what the app returned, then end the response; ``close()`` it in every case."""
        try:
            if type(result) is list or type(result) is tuple:
                # A body known in full: one write, with a Content-Length the engine computes.
                if len(result) == 1 and type(result[0]) is bytes:
                    body = result[0]  # the usual [body]: no join, no copy
                else:
                    body = b"".join(
                        _as_bytes(chunk, "each item of the app's result") for chunk in result
                    )
                self._require_status()
                self._send(body, end=True)
            elif isinstance(result, FileWrapper):
                if not self._send_file_raw(result):
                    self._send_chunks(result.blocks(max(result.blksize, FILE_BLOCK_SIZE)))
            else:
                self._send_chunks(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _send_chunks(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self._require_status()
            data = _as_bytes(chunk, "each item the app's iterable yields")
            if data:
                self._send(data, end=False)
        self._require_status()
        self._send(b"", end=True)

    def _send_file_raw(self, wrapper: FileWrapper) -> bool:
        """Send a file_wrapper's file with ``os.sendfile`` when the host and the connection
        allow it (core/files.py). False: nothing was sent; iterate it instead."""
        write_file = getattr(self._host, "write_file", None)
        if self.status is None or self.headers_sent:
            return False
        segment = wrapper.segment()
        if segment is None:
            return False
        if self._length is not None:
            if self._length > segment.count:
                return False  # short of its Content-Length: the block loop reports it
            segment = FileSegment(segment.file, segment.offset, self._length)
        stream = self._stream

        def start() -> bool:  # on the engine's thread
            if stream.aborted_flag:
                raise ClientDisconnected("the client has disconnected")
            if write_file is None or not stream.can_transmit_file:
                return False
            self._apply_head(stream)
            prepare_file_response(stream, segment.count, True)
            stream.transmit_file(segment, True, self._host.now())
            return True

        if not self._host.call(start):
            if self._length is None:
                # The size is known: say it, so the body needs no chunking and HEAD tells it.
                self._length = segment.count
                self._headers = [*self._headers, (b"content-length", b"%d" % segment.count)]
            return False
        self.headers_sent = True
        if stream.transmitting_file:
            assert write_file is not None  # start() checked
            write_file(stream, segment)

            def sent() -> None:
                if not stream.aborted_flag:
                    stream.file_transmitted(self._host.now())

            self._host.call(sent)
        self.sent += segment.count
        self._ended = True
        return True

    def _apply_head(self, stream: HttpStream) -> None:
        assert self.status is not None
        stream.status = self.status
        stream.reason = self._reason
        stream.response_headers = self._headers

    def _require_status(self) -> None:
        if self.status is None:
            raise WsgiError(
                "the app returned (or yielded) a body without calling start_response first"
            )

    @property
    def _body_expected(self) -> bool:
        return self._stream.method != "HEAD" and self.status not in _NO_BODY_STATUSES

    def _send(self, data: bytes, end: bool) -> None:
        length = self._length
        if self._ended:  # the Content-Length was reached: the response is complete already
            if data and length is not None:
                self._overflowed(length)
            return
        if length is not None and self._body_expected:
            room = length - self.sent
            if len(data) > room:
                self._overflowed(length)
                data = data[:room]
            if len(data) == room:
                # The last byte ends the response in the same operation, so a client that
                # closes once it has every byte cannot make the end look like a disconnect.
                end = True
            elif end:
                # Ending here would be a lie to the client: app_finished resets instead.
                self.problems.append(
                    f"the app's body ended after {self.sent + len(data)} of the {length} "
                    "bytes its Content-Length announced"
                )
                end = False
            if not data and not end:
                return
        if not end:
            self._host.wait_writable(self._stream)
        self.headers_sent = True
        self._host.call(lambda: self._stream_send(data, end))
        self.sent += len(data)
        self._ended = end

    def _overflowed(self, length: int) -> None:
        if not self._overflow:
            self._overflow = True
            self.problems.append(
                f"the app sent more than its Content-Length of {length} bytes; "
                "the extra bytes were dropped"
            )

    def _stream_send(self, data: bytes, end: bool) -> None:
        """On the engine's thread."""
        stream = self._stream
        if stream.aborted_flag:
            raise ClientDisconnected("the client has disconnected")
        if not stream.response_started:
            self._apply_head(stream)
        now = self._host.now()
        if end:
            stream.complete(data, now)
        else:
            stream.write(data, now)


class WsgiCycle:
    """One request through a WSGI app. ``run`` on the app's thread, then ``app_finished`` on
    the engine's thread (exactly once, whatever ``run`` did)."""

    def __init__(
        self,
        app: WsgiApp,
        stream: HttpStream,
        host: WsgiHost,
        errors: Any,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.stream = stream
        self.input = WsgiInput(stream, host)
        self.response = WsgiResponse(stream, host)
        self.environ = wsgi_environ(stream, self.input, errors, extra)
        self.failed = False

    def run(self) -> None:
        """Call the app and send its response. Raises what the app raised."""
        response = self.response
        try:
            result = self.app(self.environ, response.start_response)
            response.send_iterable(result)
        except BaseException:
            self.failed = True
            raise

    def app_finished(self, now: float) -> str | None:
        """Mend what the app left undone, release the stream, say what happened for the log."""
        try:
            return self._fix_up(now)
        finally:
            self.stream.finish()

    def _fix_up(self, now: float) -> str | None:
        stream = self.stream
        problems = "; ".join(self.response.problems)
        if stream.response_complete or stream.aborted_flag:
            return problems or None
        if not stream.response_started:
            stream.status = 500
            stream.reason = None
            stream.response_headers = [(b"content-type", b"text/plain; charset=utf-8")]
            stream.complete(b"Internal Server Error\n", now)
            if problems:
                return problems + "; answered 500"
            if self.failed:
                return None  # the host logged the exception; a 500 is the expected answer
            return "the app did not send a complete response; answered 500"
        stream.abort()
        if problems:
            return problems + "; connection aborted"
        return "the app ended before finishing its response; connection aborted"
