"""Request delegation's socket work, shared by the socket adapters (the theory is in
core/delegation.py): sending a connection to a queue, and taking handoffs from one.

A queue is a listening SOCK_SEQPACKET unix socket (``--urls queue:/path``). A front keeps one
connection to each queue it delegates to and sends one packet per handed-over connection: the
``encode_handoff`` bytes, with the connection's descriptor as SCM_RIGHTS ancillary data. The
front never waits: a receiver that is not running, or whose socket buffer is full, is a failed
handoff, which the engine answers with 503 (HTTP.sys answers 503 when a queue is full, too).

The receiver accepts connections from fronts on its queue socket, but only from processes of
its own user (or root), checked with SO_PEERCRED; the socket file's mode (``?mode=0600``) is
the first guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import os
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from tiercel.core.delegation import (
    HANDOFF_MAX_SIZE,
    Handoff,
    HandoffError,
    decode_handoff,
    encode_handoff,
)

log = logging.getLogger("tiercel.error")

# Descriptors accepted in one packet: a handoff has one; more are read (to close them) and refused.
_MAX_FDS = 4
_UCRED = struct.Struct("3i")  # pid, uid, gid
_STREAM_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)


class DelegationFailed(Exception):
    """A connection could not be handed to its queue; the message says why (for the 503)."""


def _why(queue: str, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return f"no server is listening on the queue {queue} (start one with --urls queue:{queue})"
    if exc.errno == errno.ECONNREFUSED:
        return f"the server behind the queue {queue} is not running"
    if exc.errno in (errno.EAGAIN, errno.ENOBUFS):
        return f"the queue {queue} is full"
    if exc.errno == errno.EMSGSIZE:
        return f"the bytes read before the request head ended are too large for the queue {queue}"
    if exc.errno == errno.EACCES:
        return f"permission denied on the queue {queue}"
    return f"the queue {queue} failed: {exc.strerror or exc}"


class QueueSender:
    """One connected socket per queue, made on first use and made again when the receiver
    restarted (the old connection then fails with EPIPE or ECONNRESET). Thread-safe."""

    def __init__(self) -> None:
        self._sockets: dict[str, socket.socket] = {}
        self._lock = threading.Lock()

    def send(self, queue: str, handoff: Handoff, fd: int) -> None:
        """Send the descriptor ``fd`` and the handoff; raises DelegationFailed. The caller
        still owns ``fd``: the receiver has its own reference once this returns."""
        payload = encode_handoff(handoff)
        with self._lock:
            sock = self._sockets.get(queue)
            if sock is not None:
                try:
                    socket.send_fds(sock, [payload], [fd])
                    return
                except (BlockingIOError, InterruptedError) as exc:
                    raise DelegationFailed(_why(queue, exc)) from None
                except OSError as exc:
                    self._drop(queue)
                    if exc.errno == errno.EMSGSIZE:
                        raise DelegationFailed(_why(queue, exc)) from None
                    # The receiver went away since the last handoff: connect again, once.
            sock = self._connect(queue)
            try:
                socket.send_fds(sock, [payload], [fd])
            except OSError as exc:
                self._drop(queue)
                raise DelegationFailed(_why(queue, exc)) from None

    def _connect(self, queue: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # The kernel caps this at net.core.wmem_max; one packet must fit in it.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, HANDOFF_MAX_SIZE)
            sock.setblocking(False)
            sock.connect(queue)
        except OSError as exc:
            sock.close()
            raise DelegationFailed(_why(queue, exc)) from None
        self._sockets[queue] = sock
        return sock

    def _drop(self, queue: str) -> None:
        sock = self._sockets.pop(queue, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        with self._lock:
            for queue in list(self._sockets):
                self._drop(queue)


def peer_refusal(conn: socket.socket) -> str | None:
    """Why a front connecting to our queue is refused (another user), or None."""
    try:
        pid, uid, _ = _UCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
    except OSError as exc:
        return f"cannot check who connected: {exc.strerror or exc}"
    if uid not in (os.getuid(), 0):
        return f"process {pid} runs as uid {uid}, not as this server's uid {os.getuid()}"
    return None


def take_handoff(conn: socket.socket) -> tuple[Handoff, socket.socket] | None:
    """Read one packet from a front's connection: the handoff and the client's socket (non-
    blocking). None when the front closed the connection. A bad packet raises HandoffError,
    after closing whatever descriptors came with it; BlockingIOError/TimeoutError pass through."""
    data, fds, flags, _ = socket.recv_fds(conn, HANDOFF_MAX_SIZE, _MAX_FDS)
    if not data and not fds:
        return None
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise HandoffError("the packet was truncated")
        if len(fds) != 1:
            raise HandoffError(f"it carries {len(fds)} descriptors; a handoff carries one socket")
        handoff = decode_handoff(data)
        try:
            client = socket.socket(fileno=fds[0])
        except OSError as exc:
            raise HandoffError(f"its descriptor is not a socket ({exc.strerror})") from None
        if client.type != socket.SOCK_STREAM or client.family not in _STREAM_FAMILIES:
            client.detach()
            raise HandoffError("its descriptor is not a TCP or unix stream socket")
    except BaseException:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    client.setblocking(False)
    return handoff, client


def drop_bad_handoff(queue_url: str, error: HandoffError) -> None:
    log.warning("%s: dropped a packet that is not a tiercel handoff: %s", queue_url, error)


class _Pending(enum.Enum):
    # What ``next_handoff`` returns when nothing can be read yet: the caller waits its
    # runtime's way (readable socket, timeout) and asks again.
    WOULD_BLOCK = enum.auto()


WOULD_BLOCK = _Pending.WOULD_BLOCK


def next_handoff(
    conn: socket.socket, queue_url: str
) -> tuple[Handoff, socket.socket] | Literal[_Pending.WOULD_BLOCK] | None:
    """One step of every runtime's reader: the next handoff, ``WOULD_BLOCK``, or None when
    the front has gone (closed, or the connection failed). Bad packets are logged and
    skipped."""
    while True:
        try:
            return take_handoff(conn)
        except (TimeoutError, BlockingIOError, InterruptedError):
            return WOULD_BLOCK
        except HandoffError as error:
            drop_bad_handoff(queue_url, error)
        except OSError:
            return None


def refuse_front(queue_url: str, conn: socket.socket) -> bool:
    """Close a front's connection that fails ``peer_refusal``; True when it was refused."""
    refusal = peer_refusal(conn)
    if refusal is None:
        return False
    log.warning("%s: refused a delegating process: %s", queue_url, refusal)
    conn.close()
    return True


# -- the receiving loops, one per runtime ----------------------------------------------------------

Adopt = Callable[[Handoff, socket.socket], Awaitable[None]]


async def serve_queue_asyncio(listener_sock: socket.socket, queue_url: str, adopt: Adopt) -> None:
    """Accept fronts on the queue socket and start a connection for every handoff."""
    loop = asyncio.get_running_loop()
    readers: set[asyncio.Task[None]] = set()
    try:
        while True:
            conn, _ = await loop.sock_accept(listener_sock)
            if refuse_front(queue_url, conn):
                continue
            reader = loop.create_task(_read_queue_asyncio(conn, queue_url, adopt))
            readers.add(reader)
            reader.add_done_callback(readers.discard)
    finally:
        for reader in list(readers):
            reader.cancel()


async def _read_queue_asyncio(conn: socket.socket, queue_url: str, adopt: Adopt) -> None:
    loop = asyncio.get_running_loop()
    conn.setblocking(False)
    try:
        while (taken := next_handoff(conn, queue_url)) is not None:
            if taken is WOULD_BLOCK:
                readable: asyncio.Future[None] = loop.create_future()
                loop.add_reader(conn.fileno(), _set_done, readable)
                try:
                    await readable
                finally:
                    loop.remove_reader(conn.fileno())
                continue
            await adopt(*taken)
    finally:
        conn.close()


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def serve_queue_trio(listener_sock: Any, queue_url: str, adopt: Adopt) -> None:
    """``serve_queue_asyncio`` for trio; ``listener_sock`` is a trio socket."""
    import trio

    async with trio.open_nursery() as readers:
        while True:
            conn, _ = await listener_sock.accept()
            plain = socket.socket(fileno=conn.detach())
            if refuse_front(queue_url, plain):
                continue
            readers.start_soon(_read_queue_trio, plain, queue_url, adopt)


async def _read_queue_trio(conn: socket.socket, queue_url: str, adopt: Adopt) -> None:
    import trio

    conn.setblocking(False)
    with conn:
        while (taken := next_handoff(conn, queue_url)) is not None:
            if taken is WOULD_BLOCK:
                await trio.lowlevel.wait_readable(conn)
                continue
            await adopt(*taken)


def read_queue_blocking(
    conn: socket.socket,
    queue_url: str,
    adopt: Callable[[Handoff, socket.socket], None],
    stopping: Callable[[], bool],
    poll: float,
) -> None:
    """The threads adapter's reader: one thread per front connection, until it closes or the
    server stops (checked every ``poll`` seconds)."""
    conn.settimeout(poll)
    with conn:
        while not stopping():
            taken = next_handoff(conn, queue_url)
            if taken is None:
                return
            if taken is WOULD_BLOCK:
                continue  # the poll timed out: check ``stopping``, then read again
            adopt(*taken)
