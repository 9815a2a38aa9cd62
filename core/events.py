"""Events the connection engine hands to its adapter.

There are only two: a new request to run the app for, and "something changed on this stream"
(body bytes arrived, the body ended, the client went away, the response finished). The adapter
does not need to know which: it wakes whatever waits on the stream, and the waiter asks the
stream what it now can do. That keeps every protocol decision inside the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .delegation import Handoff
    from .stream import HttpStream


# Not frozen: a frozen dataclass's __init__ goes through object.__setattr__, and one of these
# is made for every request. Nothing changes them after the engine makes them.
@dataclass(slots=True)
class RequestReceived:
    stream: HttpStream


@dataclass(slots=True)
class StreamUpdated:
    stream: HttpStream


@dataclass(frozen=True, slots=True)
class ConnectionDelegated:
    """The connection's first request belongs to another process (core/delegation.py).

    The engine has stopped reading and writes nothing more. The adapter stops reading too,
    sends the socket and ``encode_handoff(handoff)`` to ``queue``, then closes its own
    descriptor without a FIN or a reset. If the handoff fails it calls ``refuse(reason)``
    instead: the engine then has a 503 to send, and the connection closes as after any answer.
    """

    queue: str
    handoff: Handoff
    refuse: Callable[[str], None]
    stream: ClassVar[None] = None  # no stream: a waiter lookup by stream finds nothing


Event = RequestReceived | StreamUpdated | ConnectionDelegated
