"""Names of the worker's Redis keys.

Each user has one hash, ``<app_id>:{u:<user_id>}``, and, while a change waits for the broker,
one outbox list ``<app_id>:{u:<user_id>}:ob``; the hash tag keeps both in one cluster slot.

Segment populations are counted in small hashes ``<app_id>:pop:{<tag>}``: on a Redis Cluster one
per hash slot, its tag chosen so that the key lies in that slot (a script may only touch keys of
the user's slot); on a single server one for the whole app (:func:`population_key`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from segstream.settings import Settings

__all__ = [
    "call_groups",
    "outbox_key",
    "population_key",
    "population_keys",
    "population_pattern",
    "population_slot_key",
    "slot_groups",
    "slot_tag",
    "slot_tags",
    "state_key",
    "state_prefix",
    "user_pattern",
    "user_slot",
    "wait_key",
]


def state_prefix(settings: Settings) -> str:
    """Prefix of the worker's Redis keys: ``<app_id>:``, so apps (and tests) never share state."""
    return f"{settings.app_id}:"


def state_key(prefix: str, user_id: int) -> str:
    """Name of the user's hash: ``<prefix>{u:<user_id>}``."""
    return f"{prefix}{{u:{user_id}}}"


def outbox_key(prefix: str, user_id: int) -> str:
    """Name of the user's outbox list (same hash slot as the hash)."""
    return f"{prefix}{{u:{user_id}}}:ob"


def user_pattern(prefix: str) -> str:
    """SCAN MATCH pattern of every user hash (``prefix`` glob characters escaped)."""
    return _glob_escape(prefix) + "{u:*}"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@cache
def slot_tags() -> tuple[str, ...]:
    """A hash tag for every cluster slot: ``slot_tags()[s]`` hashes (CRC16) to slot ``s``.

    The first of ``p0, p1, p2, ...`` to land in each slot; about 150,000 CRC16s, computed once
    per process (~0.1 s).
    """
    tags: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    missing, n = REDIS_CLUSTER_HASH_SLOTS, 0
    while missing:
        tag = f"p{n}"
        slot = key_slot(tag.encode())
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        n += 1
    return tuple(t for t in tags if t is not None)


@cache
def slot_tag(slot: int) -> str:
    """``slot_tags()[slot]``, without building the whole table when it is not built yet.

    A single server only ever needs slot 0's tag: found on its own it costs a few thousand
    CRC16s (milliseconds) where the table costs ~150,000 (~0.1 s, and 0.5 s under a profiler),
    which the worker paid in its first batch. Once :func:`slot_tags` has run, a look-up.
    """
    if slot_tags.cache_info().currsize:
        return slot_tags()[slot]
    if not 0 <= slot < REDIS_CLUSTER_HASH_SLOTS:
        raise IndexError(f"no cluster slot {slot} (0..{REDIS_CLUSTER_HASH_SLOTS - 1})")
    n = 0
    while key_slot(f"p{n}".encode()) != slot:
        n += 1
    return f"p{n}"  # the first to land in the slot, as in slot_tags


def user_slot(prefix: str, user_id: int) -> int:
    """The cluster hash slot of the user's keys (hash, outbox, wait marker), 0..16383."""
    return key_slot(state_key(prefix, user_id).encode())


def slot_groups(
    prefix: str, user_ids: Sequence[int], *, cluster: bool
) -> list[tuple[int, list[int]]]:
    """:func:`call_groups` with each group's hash slot: on a single server ``(0, all users)``
    (slot 0 names the one population hash), on a cluster ``(slot, its users)``.

    Each user's slot is computed once here (one CRC16 of its hash tag); the call's population
    key and, on a cluster, the node it goes to follow from the group's slot.
    """
    if not cluster:
        return [(0, list(user_ids))]
    by_slot: dict[int, list[int]] = {}
    for uid in user_ids:
        by_slot.setdefault(user_slot(prefix, uid), []).append(uid)
    return list(by_slot.items())


def call_groups(prefix: str, user_ids: Sequence[int], *, cluster: bool) -> list[list[int]]:
    """The users that one script call may take together: on a single server all of them (one
    group), on a cluster those whose keys share a hash slot (a call may touch one slot only).

    Groups come in the order of their first user, each user's order kept within its group.
    """
    return [group for _, group in slot_groups(prefix, user_ids, cluster=cluster)]


def population_key(prefix: str, user_id: int, *, cluster: bool) -> str:
    """The population counter hash that counts ``user_id``: ``<prefix>pop:{<tag>}``.

    On a cluster the one of the user's hash slot, so the scripts that change the user update
    it in the same atomic step; on a single server (``cluster=False``) one hash for all users
    (the key of slot 0), so that reading the populations is one ``HGETALL``.
    """
    return population_slot_key(prefix, user_slot(prefix, user_id) if cluster else 0)


def population_slot_key(prefix: str, slot: int) -> str:
    """The population counter hash that lies in cluster slot ``slot`` (0..16383)."""
    return f"{prefix}pop:{{{slot_tag(slot)}}}"


def population_keys(prefix: str, *, cluster: bool) -> list[str]:
    """Every population counter hash a writer with this ``cluster`` flag may update, by slot
    (16,384 on a cluster, 1 on a single server)."""
    if not cluster:
        return [population_slot_key(prefix, 0)]
    return [f"{prefix}pop:{{{tag}}}" for tag in slot_tags()]


def population_pattern(prefix: str) -> str:
    """SCAN MATCH pattern of every population counter hash of ``prefix``."""
    return _glob_escape(prefix) + "pop:{*}"


def wait_key(key: str) -> str:
    """A short-lived marker in ``key``'s hash slot: ``<prefix>{u:<user_id>}:wait``.

    Written just before a ``WAIT`` on the same connection (``RedisState``), so the WAIT
    covers every write the node made before it, whichever connection made them. Not a hash:
    the user scans (``SCAN ... TYPE hash``) never see it.
    """
    return key.split("}", 1)[0] + "}:wait"
