"""Remembering what requests repeat: the same few header lists, Host values, status lines.

A ``BoundedCache`` is a plain dictionary (lookups cost what ``dict.get`` costs) that starts over
when it is full, so varied input (a Content-Length per response, a Host per tenant) costs one
insertion each and nothing accumulates.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

CACHE_SIZE = 512


class BoundedCache(dict[K, V]):
    def __init__(self, size: int = CACHE_SIZE) -> None:
        super().__init__()
        self.size = size

    def remember(self, key: K, value: V) -> V:
        if len(self) >= self.size:
            self.clear()
        self[key] = value
        return value
