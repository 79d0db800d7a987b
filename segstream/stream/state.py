"""Per-user state in Redis: what the stream knows about each user, updated exactly once in effect.

Each user has one hash, ``<app_id>:{u:<user_id>}``, and, only while a segment change waits
for the broker, one list ``<app_id>:{u:<user_id>}:ob`` (the outbox). Both keys carry the hash
tag ``{u:<user_id>}``, so they live in one slot and the Lua scripts that touch them work on a
Redis Cluster. ``lua/apply.lua`` documents the hash fields; the work per event is O(1) in the
user's history (a few hash operations, whatever the number of past orders).

A batch costs two round trips at most, whatever its size: one ``apply`` script call with
every user's events of the batch (each user's in order), then one ``settle`` call for the
users whose segment or model version changed or who have a change pending. On a Redis
Cluster a call may only touch one hash slot, so there each becomes one call per slot, still
in one pipeline; a standalone server takes the whole batch in one call (per-event calls cost
~27 µs each in Redis alone, a batched call a few µs per event). Each script runs
atomically; the fences stored by ``apply`` make a repeated call (redelivery after a crash, a
retried pipeline) a no-op, so any of these calls can be retried.

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
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from segstream.settings import Settings
from segstream.stream.events import Event, OrderEvent, Source, UserEvent

__all__ = [
    "RedisState",
    "Settle",
    "SettleOutcome",
    "UserState",
    "decode_state",
    "describe_user",
    "encode_events",
    "outbox_key",
    "state_key",
    "state_prefix",
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


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


@dataclass(frozen=True, slots=True)
class UserState:
    """A user's state as ``apply`` left it; ``None`` where not known yet.

    ``segment``/``model_version`` are those of the last change queued for publication.
    """

    user_id: int
    applied: int
    """How many of the events just sent were fresh (the rest were redeliveries)."""
    age: int | None
    gender: str | None
    country: str | None
    traffic_source: str | None
    total_orders: int
    most_frequent_brand: str | None
    most_frequent_category: str | None
    segment: int | None
    model_version: str | None
    pending: int
    """Change events in the outbox, not yet acknowledged by the broker."""
    changes: int = 0
    """Changes queued for this user so far: the sequence number of the last one."""
    feature_version: int = 0
    """How many ``apply`` calls changed the features so far (hash field ``fv``): what a segment
    assigned from these features is checked against when it is written."""

    @property
    def assignable(self) -> bool:
        """True when every feature is known: a profile, an order, a brand and a category.

        The same rule as the SQL, which drops users without orders or with a missing feature.
        """
        return (
            self.age is not None
            and self.gender is not None
            and self.country is not None
            and self.traffic_source is not None
            and self.total_orders > 0
            and self.most_frequent_brand is not None
            and self.most_frequent_category is not None
        )

    def features(self) -> dict[str, Any]:
        """The feature row, by ``training.features.FEATURE_COLUMNS`` name (assignable users)."""
        return {
            "age": self.age,
            "gender": self.gender,
            "country": self.country,
            "traffic_source": self.traffic_source,
            "total_orders": self.total_orders,
            "most_frequent_brand": self.most_frequent_brand,
            "most_frequent_category": self.most_frequent_category,
        }


@dataclass(frozen=True, slots=True)
class Settle:
    """One user's row of a ``settle`` call: store a new segment with its change event, or only
    a new model version, or nothing; and read the user's outbox.

    Built by :func:`segstream.stream.changes.plan_settle`. Every ``seen_*`` value is what
    ``apply`` returned: the write happens only if all are still stored (compare-and-set).
    """

    user_id: int
    seen_segment: int | None
    seen_model_version: str | None
    segment: int
    """The new segment: differs from ``seen_segment`` exactly when ``change`` is given."""
    model_version: str
    """The new model version; when it differs from the seen one without a ``change``, only it
    is stored (no event: the segment is the same)."""
    change: bytes | None
    """The serialised change event to queue, or ``None``."""
    updated_at: str = ""
    """The change's occurred_at, stored with the segment (hash field ``ua``)."""
    seen_changes: int = 0
    """Changes queued so far; ``change`` is the next one."""
    seen_feature_version: int = 0
    """The features version the new segment was computed from."""

    @property
    def writes(self) -> bool:
        """True when the row stores something (a change, or only a model version)."""
        return self.change is not None or self.model_version != self.seen_model_version


@dataclass(frozen=True, slots=True)
class SettleOutcome:
    """What a ``settle`` call left: the pending changes, and the writes it refused."""

    pending: dict[int, list[bytes]]
    """user -> every pending change, oldest first, those queued just now included; users
    without pending changes are left out."""
    refused: frozenset[int]
    """Users whose row had something to write (:attr:`Settle.writes`) but whose stored state
    was no longer the one seen: another writer updated them in between, and its write stands."""


def encode_events(events: Sequence[tuple[Source, Event]]) -> list[list[Any]]:
    """One user's events, in order, as ``apply.lua`` reads them (see the script's header).

    Offsets and ids travel as decimal strings: Lua numbers are doubles.
    """
    encoded: list[list[Any]] = []
    for source, event in events:
        fence = f"f:{source.topic}:{source.partition}"
        offset = str(source.offset)
        if isinstance(event, OrderEvent):
            items: list[str] = []
            for item in event.items:
                items += (item.brand or "", item.category or "")
            encoded.append(["o", fence, offset, str(event.order_id), items])
        elif isinstance(event, UserEvent):
            encoded.append(
                ["u", fence, offset, str(event.age), event.gender, event.country,
                 event.traffic_source]
            )  # fmt: skip
        else:  # pragma: no cover - the type union is closed
            raise TypeError(f"not an event: {event!r}")
    return encoded


def _json(value: object) -> bytes:
    return msgspec.json.encode(value)


def decode_state(user_id: int, reply: Sequence[Any]) -> UserState:
    """``apply.lua``'s reply (bytes or None items) -> :class:`UserState`.

    The twelfth and thirteenth items (changes queued, features version) may be left out or
    ``None``: they then count as 0.
    """
    applied, age, gender, country, source, orders, brand, category, segment, version, pending = (
        reply[:11]
    )
    changes, feature_version = (
        0 if len(reply) <= i or reply[i] is None else int(reply[i]) for i in (11, 12)
    )
    return UserState(
        user_id=user_id,
        applied=int(applied),
        age=None if age is None else int(age),
        gender=_text(gender),
        country=_text(country),
        traffic_source=_text(source),
        total_orders=0 if orders is None else int(orders),
        most_frequent_brand=_text(brand),
        most_frequent_category=_text(category),
        segment=None if segment is None else int(segment),
        model_version=_text(version),
        pending=int(pending),
        changes=changes,
        feature_version=feature_version,
    )


_STATE_FIELDS: Final = (b"age", b"gen", b"cty", b"src", b"n", b"tb", b"tc", b"seg", b"mv")
"""Hash fields in the order of ``apply.lua``'s reply, after its leading ``applied``."""


def describe_user(
    user_id: int, fields: Mapping[bytes, bytes], pending: Sequence[bytes]
) -> dict[str, Any]:
    """Everything stored about a user, readable and JSON-ready (for ``segstream segment``).

    Keys: user_id, segment, model_version, updated_at, changes (queued so far),
    feature_version (``apply`` calls that changed the features), assignable, features (by column),
    orders (ids counted, ascending), brand_counts and category_counts (most first, then by
    name), fences (``topic:partition`` -> last applied offset), pending (change events).
    """
    reply = [
        0,
        *(fields.get(name) for name in _STATE_FIELDS),
        len(pending),
        fields.get(b"cs"),
        fields.get(b"fv"),
    ]
    state = decode_state(user_id, reply)
    orders, brands, categories, fences = [], {}, {}, {}
    for raw_name, raw_value in fields.items():
        name = raw_name.decode()
        kind, sep, rest = name.partition(":")
        if not sep:
            continue
        if kind == "o":
            orders.append(int(rest))
        elif kind == "b":
            brands[rest] = int(raw_value)
        elif kind == "c":
            categories[rest] = int(raw_value)
        elif kind == "f":
            fences[rest] = int(raw_value)

    def ranked(counts: dict[str, int]) -> dict[str, int]:
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    updated = fields.get(b"ua")
    return {
        "user_id": user_id,
        "segment": state.segment,
        "model_version": state.model_version,
        "updated_at": updated.decode() if updated else None,
        "changes": state.changes,
        "feature_version": state.feature_version,
        "assignable": state.assignable,
        "features": state.features(),
        "orders": sorted(orders),
        "brand_counts": ranked(brands),
        "category_counts": ranked(categories),
        "fences": fences,
        "pending": [json.loads(change) for change in pending],
    }


_SCRIPT_NAMES: Final = ("apply", "settle")
_WIDTH: Final = 13
"""Values per user in ``apply.lua``'s reply."""


def _script_text(name: str) -> str:
    return resources.files("segstream.stream").joinpath("lua", f"{name}.lua").read_text()


class RedisState:
    """The Redis side of the worker: batched, atomic, idempotent state updates.

    Connection and timeout errors propagate as redis-py's exceptions; the caller retries
    (every call here is safe to repeat). A script missing from the server's cache (a restarted
    Redis) is loaded again transparently.
    """

    def __init__(self, client: aioredis.Redis, prefix: str, *, cluster: bool = False) -> None:
        """Work through ``client``, which must not decode responses.

        Args:
            prefix: starts every key (e.g. ``"app:"``).
            cluster: the server is a Redis Cluster: a script call may then only touch keys
                of one hash slot, so a batch becomes one call per slot it touches (all in
                one pipeline). A standalone server takes each batch in a single call.
        """
        self.client = client
        self.prefix = prefix
        self.cluster = cluster
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
                pipe.evalsha(sha, len(keys), *keys, *args)
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
            calls.append((keys, [_json([encode_events(by_user[uid]) for uid in group])]))
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
                    ]
                )
            calls.append((keys, [_json(rows)]))
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
