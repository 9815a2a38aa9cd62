"""Handing a connection over to another protocol engine without the adapter noticing.

The adapter keeps one object per connection for its whole life (the "front"). When the
protocol changes (the cleartext sniffer decides, or an HTTP/1.1 connection upgrades to h2c),
the front's methods are rebound to the new engine's bound methods, so later calls go straight
to it with no forwarding layer. Properties cannot be rebound; the fronts forward those.
"""

from __future__ import annotations

from typing import Any

ENGINE_METHODS = (
    "receive_data",
    "connection_lost",
    "on_timer",
    "next_deadline",
    "data_to_send",
    "pop_events",
    "flush",
    "set_write_blocked",
    "shutdown",
)


# The calls made for every request. A front that forwards its other methods itself rebinds
# only these: each rebound method is an object kept on the front, and idle connections add up.
HOT_METHODS = ("receive_data", "flush")


def rebind(front: Any, target: Any, names: tuple[str, ...] = ENGINE_METHODS) -> None:
    for name in names:
        setattr(front, name, getattr(target, name))
    front.connection_id = target.connection_id
