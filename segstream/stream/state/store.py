"""Per-user state in Redis: what the stream knows about each user, updated exactly once in effect.

Each user has one hash, ``<app_id>:{u:<user_id>}``, and, only while a segment change waits
for the broker, one list ``<app_id>:{u:<user_id>}:ob`` (the outbox). Both keys carry the hash
tag ``{u:<user_id>}``, so they live in one slot and the Lua scripts that touch them work on a
Redis Cluster. ``lua/apply.lua`` documents the hash fields; the work per event is O(1) in the
user's history (a few hash operations, whatever the number of past orders), but for a user past
the order dedupe window: one scan of its hash (the window's ids, its brands and categories) per
call that counts an order. A user's hash is bounded: the window keeps at most
``order_window`` order ids (``SEGSTREAM_ORDER_DEDUPE_WINDOW``), whatever the number of orders.

A batch costs two round trips at most, whatever its size: one ``apply`` script call with
every user's events of the batch (each user's in order), then one ``settle`` call for the
users whose segment or model version changed or who have a change pending. On a Redis
Cluster a call may only touch one hash slot, so there each becomes one call per slot, still
in one pipeline; a standalone server takes the whole batch in one call (per-event calls cost
~27 µs each in Redis alone, a batched call a few µs per event). Each script runs
atomically; the fences stored by ``apply`` make a repeated call (redelivery after a crash, a
retried pipeline) a no-op, so any of these calls can be retried.

Both scripts keep the segment populations in the same atomic step: ``apply`` counts a new
user as unassigned, ``settle`` moves a user between segments and model versions, in the
population counter hash of the user's slot (:func:`~segstream.stream.state.keys.population_key`;
one per call, since a call's users share a slot on a cluster and one hash serves a single
server). ``state/populations.py`` reads them.

Every write of ``settle`` is a compare-and-set against what ``apply`` returned: the segment,
model version and change count, and the features version (hash field ``fv``, bumped by every
``apply`` call that changes the features). So whoever reads a user, assigns, then writes (a
worker's batch, ``segstream reassign``) never stores a segment computed from features that
another writer's event changed in between, even when that event left the segment as it was:
the stale write is refused, and the writer that applied the event settles from the new
features.

This module does the Redis I/O; encoding arguments and decoding replies are pure functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, Final

import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from segstream.settings import Settings
from segstream.stream.domain.events import Event, Source
from segstream.stream.domain.user import Settle, SettleOutcome, UserState
from segstream.stream.state.codec import decode_state, encode_events, encode_json
from segstream.stream.state.keys import outbox_key, population_key, state_key

__all__ = ["ORDER_DEDUPE_WINDOW", "RedisState"]


_SCRIPT_NAMES: Final = ("apply", "settle")
_WIDTH: Final = 13
"""Values per user in ``apply.lua``'s reply."""

ORDER_DEDUPE_WINDOW: Final[int] = Settings.model_fields["order_dedupe_window"].default
"""Order ids a user remembers by default (``SEGSTREAM_ORDER_DEDUPE_WINDOW``'s default)."""


def _script_text(name: str) -> str:
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()


class RedisState:
    """The Redis side of the worker: batched, atomic, idempotent state updates.

    Connection and timeout errors propagate as redis-py's exceptions; the caller retries
    (every call here is safe to repeat). A script missing from the server's cache (a restarted
    Redis) is loaded again transparently.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        *,
        cluster: bool = False,
        order_window: int = ORDER_DEDUPE_WINDOW,
    ) -> None:
        """Work through ``client``, which must not decode responses.

        Args:
            prefix: starts every key (e.g. ``"app:"``).
            cluster: the server is a Redis Cluster: a script call may then only touch keys
                of one hash slot, so a batch becomes one call per slot it touches (all in
                one pipeline). A standalone server takes each batch in a single call.
            order_window: order ids each user remembers to count a re-sent order once
                (``SEGSTREAM_ORDER_DEDUPE_WINDOW``; ``lua/apply.lua`` states the rule). Every
                writer of one app must use the same value.
        """
        if order_window < 1:
            raise ValueError(f"order_window must be at least 1, got {order_window}")
        self.client = client
        self.prefix = prefix
        self.cluster = cluster
        self.order_window = order_window
        self._scripts = {name: _script_text(name) for name in _SCRIPT_NAMES}
        self._sha = {
            name: hashlib.sha1(text.encode()).hexdigest() for name, text in self._scripts.items()
        }

    async def load_scripts(self) -> None:
        """Load the Lua scripts into the server's script cache."""
        for text in self._scripts.values():
            await self.client.script_load(text)

    def _groups(self, user_ids: Sequence[int]) -> list[list[int]]:
        """Users that one script call may take together: all, or those of one hash slot."""
        if not self.cluster:
            return [list(user_ids)]
        by_slot: dict[int, list[int]] = {}
        for uid in user_ids:
            by_slot.setdefault(key_slot(state_key(self.prefix, uid).encode()), []).append(uid)
        return list(by_slot.values())

    def _population_key(self, group: Sequence[int]) -> str:
        """The population counter hash of one call's users (:meth:`_groups` makes it one)."""
        return population_key(self.prefix, group[0], cluster=self.cluster)

    async def _run(
        self,
        name: str,
        calls: Sequence[tuple[Sequence[str], Sequence[Any]]],
        before: Sequence[tuple[Any, ...]] = (),
    ) -> list:
        """One pipeline: the plain commands ``before``, then EVALSHA ``name`` per call.

        Returns the script replies only. Reloads the scripts once on NOSCRIPT (every command
        here is idempotent, so running the pipeline again is safe).
        """
        sha = self._sha[name]
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for command in before:
                pipe.execute_command(*command)
            for keys, args in calls:
                # As a plain command: redis-py's cluster pipeline refuses its evalsha() helper,
                # and routes EVALSHA by its first key (every key of a call shares one slot).
                pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
            try:
                return (await pipe.execute())[len(before) :]
            except NoScriptError:
                if attempt == 2:
                    raise
                await self.load_scripts()
        raise AssertionError("unreachable")  # pragma: no cover

    def _clear_commands(self, published: Mapping[int, Sequence[bytes]]) -> list[tuple[Any, ...]]:
        return [
            ("LREM", outbox_key(self.prefix, uid), 1, change)
            for uid, changes in published.items()
            for change in changes
        ]

    async def apply(
        self,
        by_user: Mapping[int, Sequence[tuple[Source, Event]]],
        clear: Mapping[int, Sequence[bytes]] | None = None,
    ) -> list[UserState]:
        """Apply each user's events (in order, fenced) and return every touched user's state.

        Args:
            by_user: user -> that user's events of the batch, in order.
            clear: published changes to remove from their outboxes first (see :meth:`clear`),
                sent in the same round trip.

        One round trip and, on a standalone server, one script call for the whole mapping.
        Users come back in the mapping's order.
        """
        before = self._clear_commands(clear or {})
        if not by_user:
            if before:
                await self._run("apply", [], before)
            return []
        prefix = self.prefix
        groups = self._groups(list(by_user))
        calls = []
        for group in groups:
            keys: list[str] = []
            for uid in group:
                keys += (state_key(prefix, uid), outbox_key(prefix, uid))
            keys.append(self._population_key(group))
            events = encode_json([encode_events(by_user[uid]) for uid in group])
            calls.append((keys, [events, str(self.order_window)]))
        replies = await self._run("apply", calls, before)
        states = {}
        for group, reply in zip(groups, replies, strict=True):
            for index, uid in enumerate(group):
                states[uid] = decode_state(uid, reply[_WIDTH * index : _WIDTH * (index + 1)])
        return [states[uid] for uid in by_user]

    async def settle(self, settles: Sequence[Settle]) -> dict[int, list[bytes]]:
        """Store each row's segment, version and change (compare-and-set); return the outboxes.

        :attr:`SettleOutcome.pending` of :meth:`settle_outcome`, for callers that need not
        know which writes were refused.
        """
        return (await self.settle_outcome(settles)).pending

    async def settle_outcome(self, settles: Sequence[Settle]) -> SettleOutcome:
        """Store each row's segment, version and change (compare-and-set), in one round trip.

        A row whose user's stored segment, model version, change count or features version
        is no longer the one seen writes nothing and is reported refused; its user's pending
        changes are returned all the same.
        """
        if not settles:
            return SettleOutcome({}, frozenset())
        prefix = self.prefix
        by_user = {s.user_id: s for s in settles}
        groups = self._groups(list(by_user))
        calls = []
        for group in groups:
            keys: list[str] = []
            rows: list[list[str]] = []
            for uid in group:
                s = by_user[uid]
                keys += (state_key(prefix, uid), outbox_key(prefix, uid))
                rows.append(
                    [
                        "" if s.seen_segment is None else str(s.seen_segment),
                        s.seen_model_version or "",
                        str(s.segment),
                        s.model_version,
                        s.change.decode() if s.change else "",
                        s.updated_at,
                        str(s.seen_changes),
                        str(s.seen_feature_version),
                        "" if s.drift_epoch is None else str(s.drift_epoch),
                    ]
                )
            keys.append(self._population_key(group))
            calls.append((keys, [encode_json(rows)]))
        replies = await self._run("settle", calls)
        pending: dict[int, list[bytes]] = {}
        refused: set[int] = set()
        for group, reply in zip(groups, replies, strict=True):
            *outboxes, refused_positions = reply
            refused.update(group[int(position) - 1] for position in refused_positions)
            for uid, changes in zip(group, outboxes, strict=True):
                if changes:
                    pending[uid] = list(changes)
        return SettleOutcome(
            {s.user_id: pending[s.user_id] for s in settles if s.user_id in pending},
            frozenset(refused),
        )

    async def clear(self, published: Mapping[int, Sequence[bytes]]) -> None:
        """Remove changes the broker acknowledged from their outboxes (one round trip).

        A crash before this only makes those changes be sent again (same bytes, same
        event_id) when their users next have an event: never lost.
        """
        if published:
            await self._run("apply", [], self._clear_commands(published))

    async def read_user(self, user_id: int) -> tuple[dict[bytes, bytes], list[bytes]]:
        """The user's raw hash and pending outbox entries (empty when unknown)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(state_key(self.prefix, user_id))
        pipe.lrange(outbox_key(self.prefix, user_id), 0, -1)
        fields, pending = await pipe.execute()
        return dict(fields), list(pending)

    async def memory_usage(self, user_ids: Sequence[int]) -> list[int]:
        """``MEMORY USAGE`` (bytes, all samples) of each user's keys, outbox included."""
        pipe = self.client.pipeline(transaction=False)
        for uid in user_ids:
            pipe.memory_usage(state_key(self.prefix, uid), samples=0)
            pipe.memory_usage(outbox_key(self.prefix, uid), samples=0)
        sizes = await pipe.execute()
        return [int(a or 0) + int(b or 0) for a, b in zip(sizes[::2], sizes[1::2], strict=True)]
