"""``flush()``: everything an adapter acts on after an engine call, in one call.

After each engine call an adapter must dispatch the new events, write the output, and then
either keep reading, pause reading, close after the output, or reset the connection; and it must
keep a timer for the engine's next deadline. Asking for each of those separately costs five or
six calls per flush, several of them forwarded through a front (a sniffer, a PROXY reader) to
the engine that actually runs, and a request needs up to three flushes. ``flush()`` answers them
together: ``(events, data, action, deadline)``.

``data`` is bytes, or a list of byte strings to write in order with one vectored write
(``writelines``) when copying them into one would cost more than the write: an engine returns
a list only when it holds ``VECTORED_FROM`` bytes or more. It is empty when ``action`` is
``ABORT``: unsent bytes are dropped with the connection.
``events`` may be a shared empty tuple; never mutate it.

``FlushFromState`` builds the answer from the separate contract calls, for the fronts that
have no faster way (the PROXY reader, the cleartext sniffer before it has chosen);
``Http1Protocol``, ``Http2Protocol`` and ``TlsConnection`` have their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol, TypeAlias

from .events import Event

KEEP_READING: Final = 0
PAUSE_READING: Final = 1
CLOSE: Final = 2  # after writing ``data``: a graceful close
ABORT: Final = 3  # drop everything unsent and reset the connection now

# Below this, joining the pieces into one bytes object is cheaper than a vectored write.
VECTORED_FROM: Final = 64 * 1024

Flush: TypeAlias = tuple[Sequence[Event], bytes | list[bytes], int, float | None]

NO_EVENTS: Final[tuple[Event, ...]] = ()


class _SeparateCalls(Protocol):
    def pop_events(self) -> Sequence[Event]: ...

    def data_to_send(self) -> bytes: ...

    def next_deadline(self) -> float | None: ...

    @property
    def wants_read(self) -> bool: ...

    @property
    def should_close(self) -> bool: ...

    @property
    def should_abort(self) -> bool: ...


class FlushFromState:
    """``flush()`` for an engine that implements the rest of the adapter contract."""

    def flush(self: _SeparateCalls) -> Flush:
        events = self.pop_events()
        if self.should_abort:
            return events, b"", ABORT, self.next_deadline()
        data = self.data_to_send()
        if self.should_close:
            action = CLOSE
        elif self.wants_read:
            action = KEEP_READING
        else:
            action = PAUSE_READING
        # Asked last: data_to_send may move the deadline (a TLS close_notify, a write clock).
        return events, data, action, self.next_deadline()
