"""The file side of direct file transmission, shared by the adapters (see core/files.py).

Opening and measuring the file an app named, reading a range in pieces when the bytes must pass
through the engine, and writing a range to a socket with ``os.sendfile``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tiercel.core.asgi import AsgiHttpCycle
from tiercel.core.files import READ_CHUNK_SIZE, FileBody, FileSegment
from tiercel.core.stream import HttpStream

# Bigger than this per os.sendfile call and a slow client holds the thread for long.
SENDFILE_CHUNK = 8 * 1024 * 1024


@dataclass(slots=True)
class OpenedFile:
    """A file range ready to send; ``close()`` closes the file if we opened it."""

    file: Any
    offset: int
    count: int
    owned: bool

    @property
    def segment(self) -> FileSegment:
        return FileSegment(self.file, self.offset, self.count)

    def close(self) -> None:
        if self.owned:
            self.file.close()


class FileBodyError(OSError):
    """The file an app asked to send cannot be opened or read."""


def open_file_body(body: FileBody) -> OpenedFile:
    """Open (pathsend) or take (zerocopysend) the file and work out the range to send."""
    if body.path is not None:
        try:
            file: Any = open(body.path, "rb")  # noqa: SIM115 - closed by OpenedFile.close
        except OSError as exc:
            raise FileBodyError(
                f"http.response.pathsend: cannot open {body.path!r}: {exc.strerror or exc}"
            ) from None
        owned = True
    else:
        file, owned = body.file, False
    try:
        fd = file.fileno()
        size = os.fstat(fd).st_size
        offset = body.offset if body.offset >= 0 else os.lseek(fd, 0, os.SEEK_CUR)
        available = max(0, size - offset)
        count = available if body.count is None else min(body.count, available)
    except OSError as exc:
        if owned:
            file.close()
        raise FileBodyError(f"cannot send the file: {exc}") from None
    return OpenedFile(file, offset, count, owned)


async def send_file_body(
    cycle: AsgiHttpCycle,
    send_opened: Callable[[HttpStream, OpenedFile, bool], Awaitable[None]],
) -> None:
    """Carry out the pathsend/zerocopysend message ``cycle`` holds: open the file, start the
    response for its range, and let the adapter's ``send_opened(stream, opened, end)`` send
    it; the file is closed (if opened here) whatever happens."""
    assert cycle.pending_file is not None
    opened = open_file_body(cycle.pending_file)
    try:
        end = cycle.begin_file(opened.count)
        await send_opened(cycle.stream, opened, end)
    finally:
        opened.close()
        cycle.pending_file = None


async def write_file_through_stream(
    stream: HttpStream,
    opened: OpenedFile,
    end: bool,
    *,
    now: Callable[[], float],
    until_writable: Callable[[HttpStream], Awaitable[None]],
    flush: Callable[[], None],
) -> None:
    """The range read in pieces and written through the stream, where it cannot go raw (TLS,
    HTTP/2, HTTP.sys): each piece waits for ``until_writable(stream)``, and ``flush()`` after
    each write sends what the write produced."""
    if not stream.body_allowed or opened.count == 0:
        if end:
            stream.complete(b"", now())
        else:
            stream.start(now())
        flush()
        return
    left = opened.count
    for piece in read_range(opened.file, opened.offset, opened.count):
        await until_writable(stream)
        left -= len(piece)
        try:
            if end and not left:
                stream.complete(piece, now())
            else:
                stream.write(piece, now())
        finally:
            flush()


def read_range(file: Any, offset: int, count: int) -> Iterator[bytes]:
    """The range in pieces, for transports that cannot take the file raw (TLS, HTTP/2,
    HTTP.sys under Wine)."""
    fd = file.fileno()
    pread = getattr(os, "pread", None)
    if pread is None:  # Windows has no pread: seek once, then read on from there
        file.seek(offset)
    while count > 0:
        size = min(READ_CHUNK_SIZE, count)
        data = pread(fd, size, offset) if pread is not None else file.read(size)
        if not data:
            raise FileBodyError(f"the file ended {count} bytes before the range did")
        offset += len(data)
        count -= len(data)
        yield data


def sendfile_some(sock_fd: int, segment: FileSegment, done: int) -> int:
    """One ``os.sendfile`` call for the rest of the segment after ``done`` bytes; how many it
    wrote. Raises BlockingIOError when the socket is full, OSError when it is gone."""
    remaining = segment.count - done
    sent = os.sendfile(
        sock_fd, segment.file.fileno(), segment.offset + done, min(remaining, SENDFILE_CHUNK)
    )
    if sent == 0:
        raise FileBodyError(f"the file ended {remaining} bytes before the range did")
    return sent
