"""One user's events as the state scripts take them, for tests that drive RedisState directly."""

from __future__ import annotations

from segstream.stream.domain.events import Event, OrderEvent, OrderItem, Source, UserEvent


def profile_and_order(uid: int, offset: int) -> list[tuple[Source, Event]]:
    """User ``uid``'s profile and one order (id ``uid``, one item), both at ``offset``."""
    profile = UserEvent(uid, 30, "F", "Japan", "Search", "2023-01-01T00:00:00Z")
    item = OrderItem(uid * 10, "Brand", "Jeans", 9.5)
    order = OrderEvent(uid, uid, "Processing", "2023-01-02T00:00:00Z", (item,))
    return [(Source("users", 0, offset), profile), (Source("orders", 0, offset), order)]
