"""Backfill floors in Redis: per destination, the sequence each user's snapshot covered.

One hash per destination, ``<app_id>:deliver:<destination>:floor`` (user id -> sequence), written
by ``segstream deliver --backfill`` before it hands over, read per batch by the live loop
(:func:`segstream.stream.delivery.ordering.above_floor`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from redis.asyncio import Redis

from segstream.settings import Settings
from segstream.stream.state.keys import state_prefix

__all__ = ["drop_floors", "floor_key", "read_floors", "write_floors"]

_CHUNK = 1_000


def floor_key(settings: Settings, destination: str) -> str:
    """The floor hash of ``destination``."""
    return f"{state_prefix(settings)}deliver:{destination}:floor"


async def read_floors(client: Redis, key: str, user_ids: Iterable[int]) -> dict[int, int]:
    """The floors of ``user_ids`` that have one (one round trip)."""
    users = sorted(set(user_ids))
    if not users:
        return {}
    values = await client.hmget(key, users)
    return {u: int(v) for u, v in zip(users, values, strict=True) if v is not None}


async def write_floors(client: Redis, key: str, floors: Mapping[int, int]) -> None:
    """Replace the floor hash with ``floors`` (a new backfill forgets the previous one)."""
    await client.delete(key)
    items = list(floors.items())
    for start in range(0, len(items), _CHUNK):
        await client.hset(key, mapping=dict(items[start : start + _CHUNK]))


async def drop_floors(client: Redis, key: str, user_ids: Iterable[int]) -> None:
    """Forget the floors of ``user_ids`` (users who left: a new life is numbered from 1)."""
    users = sorted(set(user_ids))
    if users:
        await client.hdel(key, *users)
