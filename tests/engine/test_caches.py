"""BoundedCache (core/caches.py): remembers, and starts over when full instead of growing."""

from __future__ import annotations

from tiercel.core.caches import BoundedCache


def test_a_full_cache_starts_over():
    cache: BoundedCache[int, str] = BoundedCache(size=3)
    for key in range(3):
        assert cache.remember(key, str(key)) == str(key)
    assert cache == {0: "0", 1: "1", 2: "2"}
    cache.remember(3, "3")
    assert cache == {3: "3"}
