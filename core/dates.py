"""The Date header, rebuilt at most once a second.

The engine never reads a clock: the host calls ``refresh(wall_time)`` from its once-a-second
tick, and every response copies the prebuilt bytes.
"""

from __future__ import annotations

from email.utils import formatdate


class HttpDate:
    __slots__ = ("_second", "value")

    def __init__(self, wall_time: float = 0.0) -> None:
        self._second = -1
        self.value = b""
        self.refresh(wall_time)

    def refresh(self, wall_time: float) -> None:
        second = int(wall_time)
        if second != self._second:
            self._second = second
            self.value = formatdate(second, usegmt=True).encode("ascii")
