"""Direct file transmission: a response body that is a range of an open file.

Theory of operation
-------------------
The engine never opens or reads a file. An app names a file (ASGI ``http.response.pathsend`` or
``http.response.zerocopysend``, WSGI ``wsgi.file_wrapper``); the adapter opens it and measures
it, and asks the stream whether the file's bytes may go to the transport as they are
(``stream.can_transmit_file``). That is true only on plaintext HTTP/1.1 with a codec that can frame
bytes it does not see, and only when the adapter said it can write files
(``TransportInfo.sendfile``).

* If so, the adapter calls ``stream.transmit_file(FileSegment(file, offset, count), end)``. The
  engine writes the response head (``Content-Length`` from the count when this is the whole
  body, so no chunking) and any framing, and hands the segment out through
  ``conn.file_to_send()`` right after the bytes before it (``data_to_send()``). The adapter
  writes the range with ``os.sendfile`` and reports ``conn.file_transmitted(now)`` (or
  ``conn.connection_lost`` when the transport failed). Until then ``data_to_send()`` holds back
  whatever comes after the file, so bytes never overtake it, and ``stream.can_write`` is False.
* Otherwise (TLS, HTTP/2, the h11 codec) the adapter reads the range in pieces and writes them
  with the ordinary ``stream.write``/``stream.complete``, waiting on ``can_write`` like any app.

``prepare_file_response`` is what both ways share: the framing decision before the first byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .errors import LocalProtocolError

if TYPE_CHECKING:
    from .stream import HttpStream

PATHSEND_EXTENSION = "http.response.pathsend"
ZEROCOPYSEND_EXTENSION = "http.response.zerocopysend"
# What the read loop reads at a time when the bytes must pass through the engine.
READ_CHUNK_SIZE = 262_144


class SupportsFileno(Protocol):
    def fileno(self) -> int: ...


@dataclass(frozen=True, slots=True)
class FileSegment:
    """``count`` bytes of ``file`` from ``offset``, to be written to the transport unchanged."""

    file: SupportsFileno
    offset: int
    count: int


@dataclass(frozen=True, slots=True)
class FileBody:
    """A file an ASGI app asked to send: by path (pathsend) or as an open file
    (zerocopysend). ``count`` None means "to the end of the file"."""

    path: str | None
    file: SupportsFileno | None
    offset: int
    count: int | None
    more_body: bool


def file_body_from_message(message: dict[str, object]) -> FileBody | None:
    """The ``FileBody`` of a pathsend or zerocopysend message; None for any other message."""
    kind = message.get("type")
    if kind == "http.response.pathsend":
        path = message.get("path")
        if not isinstance(path, str) or not path:
            raise LocalProtocolError(
                f"ASGI: 'http.response.pathsend' needs 'path', a file path string (got {path!r})"
            )
        return FileBody(path, None, 0, None, False)
    if kind != "http.response.zerocopysend":
        return None
    file = message.get("file")
    if not callable(getattr(file, "fileno", None)):
        raise LocalProtocolError(
            f"ASGI: 'http.response.zerocopysend' needs 'file', an open file (got {file!r})"
        )
    offset = message.get("offset")
    count = message.get("count")
    for name, value in (("offset", offset), ("count", count)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise LocalProtocolError(f"ASGI: zerocopysend '{name}' must be an int ({value!r})")
        if isinstance(value, int) and value < 0:
            raise LocalProtocolError(f"ASGI: zerocopysend '{name}' must be >= 0 ({value!r})")
    assert file is not None
    return FileBody(
        None,
        file,  # type: ignore[arg-type]  # checked above: it has fileno()
        offset if isinstance(offset, int) else -1,  # -1: from the file's current position
        count if isinstance(count, int) else None,
        bool(message.get("more_body", False)),
    )


def prepare_file_response(stream: HttpStream, count: int, end: bool) -> None:
    """Before the first byte of a file body: when the file is the whole body and the head has
    not gone out, declare its length, so HTTP/1.1 needs no chunking and HEAD tells the size."""
    if stream.aborted_flag:
        from .stream import ClientDisconnected

        raise ClientDisconnected("the client has disconnected")
    if stream.response_complete:
        raise LocalProtocolError("the response is already complete")
    if stream.response_started or not end:
        return
    for name, _ in stream.response_headers:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            return
    stream.response_headers = [*stream.response_headers, (b"content-length", b"%d" % count)]
