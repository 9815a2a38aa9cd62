"""Events the connection engine hands to its adapter.

There are only two: a new request to run the app for, and "something changed on this stream"
(body bytes arrived, the body ended, the client went away, the response finished). The adapter
does not need to know which: it wakes whatever waits on the stream, and the waiter asks the
stream what it now can do. That keeps every protocol decision inside the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .stream import HttpStream


@dataclass(frozen=True, slots=True)
class RequestReceived:
    stream: HttpStream


@dataclass(frozen=True, slots=True)
class StreamUpdated:
    stream: HttpStream


Event = RequestReceived | StreamUpdated
