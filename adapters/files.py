"""The file side of direct file transmission, shared by the adapters (see core/files.py).

Opening and measuring the file an app named, reading a range in pieces when the bytes must pass
through the engine, and writing a range to a socket with ``os.sendfile``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tiercel.core.files import READ_CHUNK_SIZE, FileBody, FileSegment

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


def read_range(file: Any, offset: int, count: int) -> Iterator[bytes]:
    """The range in pieces, for transports that cannot take the file raw (TLS, HTTP/2)."""
    fd = file.fileno()
    while count > 0:
        data = os.pread(fd, min(READ_CHUNK_SIZE, count), offset)
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
