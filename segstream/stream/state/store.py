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
one round trip: one pipeline per primary, sent to all primaries at once
(:meth:`RedisState._per_primary`); a standalone server takes the whole batch in one call
(per-event calls cost ~27 µs each in Redis alone, a batched call a few µs per event). Each
script runs atomically; the fences stored by ``apply`` make a repeated call (redelivery after
a crash, a retried pipeline) a no-op, so any of these calls can be retried.

Both scripts keep the segment populations in the same atomic step: ``apply`` counts a new
user as unassigned, ``settle`` moves a user between segments and model versions, in the
population counter hash of the user's slot (:func:`~segstream.stream.state.keys.population_key`;
one per call, since a call's users share a slot on a cluster and one hash serves a single
server). ``state/populations.py`` reads them.

A ``settle`` row may also be a user leaving (:class:`~segstream.stream.domain.leaving.Leave`):
the script deletes the user's hash, takes them out of their population bucket and queues the
leave event in their outbox, in one atomic step; once that event is published and cleared, no
key of the user is left.

Every write of ``settle`` is a compare-and-set against what ``apply`` returned: the segment,
model version and change count, and the features version (hash field ``fv``, bumped by every
``apply`` call that changes the features). So whoever reads a user, assigns, then writes (a
worker's batch, ``segstream reassign``) never stores a segment computed from features that
another writer's event changed in between, even when that event left the segment as it was:
the stale write is refused, and the writer that applied the event settles from the new
features.

**Replicas.** Redis replicates asynchronously: a primary acknowledges a write before any
replica has it, so a replica promoted after the primary's crash can lack acknowledged writes.
With ``min_replicas`` > 0, ``apply`` and ``settle`` end each of their pipelines with a marker
write (:func:`~segstream.stream.state.keys.wait_key`, expiring in a second) and ``WAIT
min_replicas timeout``, on one connection per primary (one pipeline on a standalone server).
``WAIT`` counts the replicas that acknowledged the replication offset of the *connection's*
last write; the marker makes that offset cover every write the primary made before it, the
step's scripts included, whichever pooled connection carried them, and whatever redis-py did
to deliver them (a reconnect, a retry). Too few replicas in time raises
:class:`~segstream.errors.ReplicaWaitTimeout`: the caller runs the step again (scripts,
marker, WAIT), which re-writes what a promoted replica lacks and waits again. A primary
with fewer replicas *connected* than ``min_replicas`` (its replica crashed, or it was just
promoted) can never acknowledge: there the step is written **degraded**, its ``WAIT`` asking
for the replicas it has (:class:`~segstream.stream.state.replicas.ReplicaShortfall` says so
loudly and counts them again every few seconds), so that one node lost does not stop the
stream. On a cluster
each primary's share goes through that node's own connection (redis-py's
``ClusterNode.execute_pipeline``), never redirected, so a MOVED, ASK or lost connection fails
the step (after a refresh of the slot map) instead of landing a write on a connection the
WAIT does not cover. The timed-out step's own result travels with the error
(``ReplicaWaitTimeout.result``: ``apply``'s states), since its retry finds the events fenced.
Writes of other hash slots (drift's shared state) wait with :meth:`RedisState.wait_for_replicas`.

This module does the Redis I/O; encoding arguments and decoding replies are pure functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, Final, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisError

from segstream.errors import ReplicaWaitTimeout
from segstream.settings import Settings
from segstream.stream.domain.events import Event, Source
from segstream.stream.domain.leaving import Leave
from segstream.stream.domain.user import Settle, SettleOutcome, UserState
from segstream.stream.state.codec import (
    decode_settle,
    decode_states,
    encode_events,
    encode_json,
    encode_settle_row,
)
from segstream.stream.state.keys import (
    outbox_key,
    population_slot_key,
    slot_groups,
    slot_tag,
    slot_tags,
    state_key,
    wait_key,
)
from segstream.stream.state.redis_internals import (
    check_redis_internals,
    execute_on_node,
    node_for_slot,
    queued_command,
    refresh_slot_map,
    reply_of,
)
from segstream.stream.state.replicas import STANDALONE, ReplicaShortfall, replicas_of

__all__ = ["ORDER_DEDUPE_WINDOW", "RedisState"]


_SCRIPT_NAMES: Final = ("apply", "settle")
WAIT_MARKER_TTL_MS: Final = 1000
"""Lifetime of a WAIT marker key (:func:`~segstream.stream.state.keys.wait_key`), in ms."""
WAIT_TIMEOUT_MS: Final[int] = Settings.model_fields["redis_wait_timeout_ms"].default
"""``SEGSTREAM_REDIS_WAIT_TIMEOUT_MS``'s default."""

ORDER_DEDUPE_WINDOW: Final[int] = Settings.model_fields["order_dedupe_window"].default
"""Order ids a user remembers by default (``SEGSTREAM_ORDER_DEDUPE_WINDOW``'s default)."""


def _key_of(command: Sequence[Any]) -> str:
    """The first key of a command of ours: EVALSHA's after its sha and key count, else args[1]."""
    return str(command[3] if command[0] == "EVALSHA" else command[1])


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
        min_replicas: int = 0,
        wait_timeout_ms: int = WAIT_TIMEOUT_MS,
        shortfall: ReplicaShortfall | None = None,
    ) -> None:
        """Work through ``client``, which must not decode responses.

        Args:
            prefix: starts every key (e.g. ``"app:"``).
            cluster: the server is a Redis Cluster: a script call may then only touch keys
                of one hash slot, so a batch becomes one call per slot it touches. With a
                :class:`~redis.asyncio.cluster.RedisCluster` client each primary's calls go
                in one pipeline on one of its connections, all primaries at once; with a plain
                client (one server) in one pipeline. A standalone server takes each batch in a
                single call.
            order_window: order ids each user remembers to count a re-sent order once
                (``SEGSTREAM_ORDER_DEDUPE_WINDOW``; ``lua/apply.lua`` states the rule). Every
                writer of one app must use the same value.
            min_replicas: replicas (of each primary touched) that must acknowledge the writes
                of ``apply`` and ``settle`` before they return (``SEGSTREAM_REDIS_MIN_REPLICAS``;
                0: do not wait). See the module docstring.
            wait_timeout_ms: longest one ``WAIT`` blocks; past it :class:`ReplicaWaitTimeout`.
            shortfall: where primaries short of replicas are recorded (one of its own, for
                ``min_replicas``, if ``None``); see the module docstring.
        """
        if order_window < 1:
            raise ValueError(f"order_window must be at least 1, got {order_window}")
        if min_replicas < 0 or wait_timeout_ms < 1:
            raise ValueError(
                f"min_replicas must be >= 0 and wait_timeout_ms >= 1, got {min_replicas}, "
                f"{wait_timeout_ms}"
            )
        if isinstance(client, AsyncRedisCluster):
            check_redis_internals()  # ConfigError naming redis-py's version if they changed
        # The population keys' hash tags, found once here rather than in the first batch:
        # every slot's on a cluster (~0.1 s), slot 0's alone on a single server (~0.05 s).
        slot_tags() if cluster else slot_tag(0)
        self.min_replicas = min_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.shortfall = shortfall or ReplicaShortfall(min_replicas)
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

    def _groups(self, user_ids: Sequence[int]) -> list[tuple[int, list[int]]]:
        """Users that one script call may take together, with their hash slot
        (:func:`~segstream.stream.state.keys.slot_groups`)."""
        return slot_groups(self.prefix, user_ids, cluster=self.cluster)

    async def _run(
        self,
        name: str,
        calls: Sequence[tuple[Sequence[str], Sequence[Any]]],
        before: Sequence[tuple[Any, ...]] = (),
        *,
        durable: bool = False,
    ) -> list[Any]:
        """One pipeline: the plain commands ``before``, then EVALSHA ``name`` per call.

        ``durable`` (with ``min_replicas`` > 0 and calls to make): the pipeline ends with a
        marker write and ``WAIT`` per primary, see the module docstring.

        Returns the script replies only. Reloads the scripts once on NOSCRIPT (every command
        here is idempotent, so running the pipeline again is safe).

        Raises:
            ReplicaWaitTimeout: ``durable`` and a primary's replicas did not acknowledge in time.
        """
        sha = self._sha[name]
        commands = [
            *before,
            *(("EVALSHA", sha, len(keys), *keys, *args) for keys, args in calls),
        ]
        wait = durable and self.min_replicas > 0 and bool(calls)
        for attempt in (1, 2):
            try:
                if isinstance(self.client, AsyncRedisCluster):
                    replies = await self._per_primary(commands, name, wait=wait)
                elif wait:
                    replies = await self._waiting_pipeline(commands, name)
                else:
                    replies = await self._pipeline(commands)
                return replies[len(before) :]
            except ReplicaWaitTimeout as exc:
                if isinstance(exc.result, list):
                    exc.result = exc.result[len(before) :]  # the script replies, as returned
                raise
            except NoScriptError:
                if attempt == 2:
                    raise
                await self.load_scripts()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """One pipeline on one connection of a single server (a cluster goes per primary)."""
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return await pipe.execute()

    def _wait_commands(self, key: str, replicas: int) -> list[tuple[Any, ...]]:
        """The marker write in ``key``'s slot, then WAIT: both on the step's connection."""
        marker = ("SET", wait_key(key), b"1", "PX", WAIT_MARKER_TTL_MS)
        return [marker, ("WAIT", replicas, self.wait_timeout_ms)]

    async def _check_acked(
        self,
        acked: int,
        asked: int,
        where: str,
        step: str,
        node: ClusterNode | None,
        replies: object = None,
    ) -> None:
        """Accept ``acked`` replicas of the ``asked`` for, or raise :class:`ReplicaWaitTimeout`.

        Too few: the primary's replicas are counted; when it has fewer connected than
        ``min_replicas`` it is recorded degraded and the step accepted if every replica it has
        acknowledged (none: at once). Otherwise a replica is late: the step is to be retried;
        ``replies`` (what the step returned on the primary) go with the error.
        """
        if int(acked) >= asked:
            return
        connected = await replicas_of(self.client, node)
        if self.shortfall.accepts(where, int(acked), connected):
            return
        place = where if node is None else f"primary {where}"
        raise ReplicaWaitTimeout(
            f"{acked} of the {asked} Redis replica(s) required acknowledged the "
            f"{step} writes on {place} within {self.wait_timeout_ms} ms: a replica is down "
            "or lagging (SEGSTREAM_REDIS_MIN_REPLICAS, SEGSTREAM_REDIS_WAIT_TIMEOUT_MS)",
            result=replies,
        )

    async def _recount_degraded(self) -> None:
        """Count again the replicas of degraded primaries due for it (:data:`RECHECK_S`);
        forget those a failover made replicas. A primary that does not answer is left as it
        was: the step's own send finds out."""
        due = self.shortfall.due()
        if not due:
            return
        with contextlib.suppress(RedisError, OSError):
            if not isinstance(self.client, AsyncRedisCluster):
                self.shortfall.record(STANDALONE, await replicas_of(self.client))
                return
            primaries = {node.name: node for node in self.client.get_primaries()}
            self.shortfall.keep_only(primaries)
            for name in due:
                if name in primaries:
                    self.shortfall.record(name, await replicas_of(self.client, primaries[name]))

    async def wait_for_replicas(self, key: str, step: str) -> None:
        """Return once ``min_replicas`` replicas of ``key``'s primary have every write that
        primary made so far (0: at once): the marker and ``WAIT`` on one of its connections.

        For writes made outside :meth:`apply` and :meth:`settle` (drift's shared state, in
        another hash slot than a batch's users, so on a cluster on a primary their WAIT does
        not cover).

        Raises:
            ReplicaWaitTimeout: too few replicas acknowledged within ``wait_timeout_ms``.
            redis.RedisError: the primary did not answer.
        """
        if self.min_replicas <= 0:
            return
        await self._recount_degraded()
        if isinstance(self.client, AsyncRedisCluster):
            client = self.client
            await client.initialize()
            node = node_for_slot(client, key_slot(key.encode()))
            asked = self.shortfall.replicas_to_wait_for(node.name)
            if not asked:
                return  # a degraded primary without replicas: said loudly by the shortfall
            marker, wait_command = self._wait_commands(key, asked)
            queued = [queued_command(0, *marker), queued_command(1, *wait_command)]
            await execute_on_node(node, queued)
            for command in queued:
                if isinstance(reply_of(command), Exception):
                    raise reply_of(command)
            await self._check_acked(reply_of(queued[-1]), asked, node.name, step, node)
        else:
            asked = self.shortfall.replicas_to_wait_for(STANDALONE)
            if not asked:
                return
            replies = await self._pipeline(self._wait_commands(key, asked))
            await self._check_acked(replies[-1], asked, STANDALONE, step, None)

    async def _waiting_pipeline(self, commands: Sequence[tuple[Any, ...]], step: str) -> list[Any]:
        """A standalone server: the step's pipeline, then the marker and WAIT on its connection.

        redis-py sends a pipeline on one connection, and after a dropped connection resends
        all of it on the new one, marker and WAIT included.
        """
        await self._recount_degraded()
        asked = self.shortfall.replicas_to_wait_for(STANDALONE)
        if not asked:
            return await self._pipeline(commands)
        key = _key_of(commands[-1])
        replies = await self._pipeline([*commands, *self._wait_commands(key, asked)])
        await self._check_acked(replies[-1], asked, STANDALONE, step, None, replies[:-2])
        return replies[:-2]

    async def _per_primary(
        self, commands: Sequence[tuple[Any, ...]], step: str, *, wait: bool
    ) -> list[Any]:
        """A cluster: each primary's commands in one pipeline on one of its connections, all
        primaries at once; with ``wait``, each pipeline ends with the marker and WAIT (for the
        replicas a degraded primary has; none: no WAIT).

        Each command goes to the primary of its first key's slot (EVALSHA: ``args[3]``; the
        ``before`` commands: ``args[1]``). Nothing is redirected: any error fails the step,
        after a refresh of the slot map when the cluster moved under us (a MOVED, a node
        gone, a slot not covered), so that the retry goes where the slots are now.

        Why not redis-py's ``ClusterPipeline``: with one script call per hash slot, a batch of
        N users is ~N commands, and its per-command bookkeeping (slot lookup, redirection
        state, result sorting) cost about a third more of the worker's CPU per command here
        than these per-node pipelines (measured with 200-user batches on 3 primaries).
        """
        client = cast(AsyncRedisCluster, self.client)  # _run checked
        try:
            return await self._send_per_primary(client, commands, step, wait)
        except NoScriptError:
            raise
        except (RedisError, OSError):
            await self._refresh_slots(client)
            raise

    async def _send_per_primary(
        self, client: AsyncRedisCluster, commands: Sequence[tuple[Any, ...]], step: str, wait: bool
    ) -> list[Any]:
        await client.initialize()
        if wait:
            await self._recount_degraded()
        # node name -> (node, the first command's key, its queued commands)
        by_node: dict[str, tuple[ClusterNode, str, list[Any]]] = {}
        ordered: list[Any] = []
        for position, command in enumerate(commands):
            key = _key_of(command)
            node = node_for_slot(client, key_slot(key.encode()))
            ordered.append(queued_command(position, *command))
            by_node.setdefault(node.name, (node, key, []))[2].append(ordered[-1])
        waits: list[tuple[ClusterNode, Any, int]] = []
        for node, key, queued in by_node.values() if wait else ():
            asked = self.shortfall.replicas_to_wait_for(node.name)
            if not asked:
                continue
            marker, wait_command = self._wait_commands(key, asked)
            queued += [queued_command(-1, *marker), queued_command(-1, *wait_command)]
            waits.append((node, queued[-1], asked))
        outcomes = await asyncio.gather(
            *(execute_on_node(node, queued) for node, _, queued in by_node.values()),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        for _, _, queued in by_node.values():
            for sent in queued:
                if isinstance(reply_of(sent), Exception):
                    raise reply_of(sent)
        results = [reply_of(command) for command in ordered]
        for node, waited, asked in waits:
            acked = reply_of(waited)
            await self._check_acked(acked, asked, node.name, step, node, results)
        return results

    @staticmethod
    async def _refresh_slots(client: AsyncRedisCluster) -> None:
        """Re-read the slot map (a failover, a resharding); a failure here is the next try's."""
        with contextlib.suppress(RedisError, OSError):
            await refresh_slot_map(client)

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
        slotted = self._groups(list(by_user))
        groups = [group for _, group in slotted]
        calls = []
        for slot, group in slotted:
            keys: list[str] = []
            for uid in group:
                keys += (state_key(prefix, uid), outbox_key(prefix, uid))
            keys.append(population_slot_key(prefix, slot))
            events = encode_json([encode_events(by_user[uid]) for uid in group])
            calls.append((keys, [events, str(self.order_window)]))
        try:
            replies = await self._run("apply", calls, before, durable=True)
        except ReplicaWaitTimeout as exc:
            # Applied on the primary, not yet acknowledged: the states it returned go with
            # the error, since a retry finds these events fenced (``applied`` 0).
            if isinstance(exc.result, list):
                exc.result = decode_states(list(by_user), groups, exc.result)
            raise
        return decode_states(list(by_user), groups, replies)

    async def settle(self, settles: Sequence[Settle | Leave]) -> dict[int, list[bytes]]:
        """Store each row's segment, version and change (compare-and-set); return the outboxes.

        :attr:`SettleOutcome.pending` of :meth:`settle_outcome`, for callers that need not
        know which writes were refused.
        """
        return (await self.settle_outcome(settles)).pending

    async def settle_outcome(self, settles: Sequence[Settle | Leave]) -> SettleOutcome:
        """Store each row's segment, version and change (compare-and-set), in one round trip.

        A row whose user's stored segment, model version, change count or features version
        is no longer the one seen writes nothing and is reported refused; its user's pending
        changes are returned all the same. A :class:`Leave` row erases its user (hash gone,
        out of the population counts) and queues the leave event, with the same
        compare-and-set (``lua/settle.lua``); one for a user who is not stored, or whose
        stored state already follows that leave, changes nothing and is not refused.
        """
        if not settles:
            return SettleOutcome({}, frozenset())
        prefix = self.prefix
        by_user = {s.user_id: s for s in settles}
        slotted = self._groups(list(by_user))
        groups = [group for _, group in slotted]
        calls = []
        for slot, group in slotted:
            keys: list[str] = []
            for uid in group:
                keys += (state_key(prefix, uid), outbox_key(prefix, uid))
            keys.append(population_slot_key(prefix, slot))
            rows = [encode_settle_row(by_user[uid]) for uid in group]
            calls.append((keys, [encode_json(rows)]))
        replies = await self._run("settle", calls, durable=True)
        pending, refused = decode_settle(groups, replies)
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
