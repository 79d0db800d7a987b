"""Segment populations: users per segment and model version, maintained as counters.

Maintained, not counted: ``apply.lua`` counts a new user as unassigned and ``settle.lua`` moves
a user between segments and versions in the same atomic step as the user's own write, in the
population counter hash of the user's slot (:func:`~segstream.stream.state.keys.population_key`:
one per hash slot on a Redis Cluster, one per app on a single server). A script either runs
whole or not at all, and Redis persists and replicates its effects as one transaction, so the
counters are exact after any crash of a worker, and after a Redis restart from its AOF.
Fields: ``u`` (users not assigned yet) and ``s:<segment>:<model version>``; a field that falls
to 0 is removed.

:func:`read_populations` sums the counter hashes inside Redis, one script call per primary
(every hash of the node's slots), so a read costs O(slots x fields), whatever the number of
users: 16,384 hashes on a cluster, one on a single server.

:func:`count_populations` is the old way, O(users): it walks the user hashes with ``SCAN``
(one cursor per primary) and tallies each page inside Redis. :func:`recount_populations`
rebuilds the counters from that walk (``segstream populations --recount``): a repair for
counters written by hand or by a segstream older than the counters. It is exact when no
writer changes users while it runs (stop the workers and ``reassign`` first): a user created
or moved during the walk may be counted under its old state and then moved again by its
writer, off by one per such user.

The scripts need Redis 7.0 or later (script flags): ``allow-cross-slot-keys`` lets one call
read every slot of a cluster node, ``no-writes`` lets the read run anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import NoScriptError, ResponseError

from segstream.stream.clients.retry import REDIS_TRANSIENT
from segstream.stream.state.keys import (
    population_keys,
    population_pattern,
    population_slot_key,
    slot_tags,
    user_pattern,
)
from segstream.stream.state.keyspace import primaries, scan_page
from segstream.stream.state.redis_internals import (
    check_redis_internals,
    node_for_slot,
    node_named,
    refresh_slot_map,
)

__all__ = [
    "PopulationCache",
    "Populations",
    "count_populations",
    "merge_counts",
    "read_populations",
    "recount_populations",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Populations:
    """Users per segment, by model version, as counted at ``counted_at``."""

    by_version: Mapping[str, Mapping[int, int]]
    """model version -> segment -> users whose current segment it is."""
    unassigned: int
    """Users the worker knows but could not assign yet (no order, or a feature missing)."""
    counted_at: float = 0.0
    """Seconds since the epoch."""
    duration_s: float = 0.0
    """How long the read (or count) took, in seconds."""

    @property
    def users(self) -> int:
        """Every user with a state."""
        return self.unassigned + sum(sum(c.values()) for c in self.by_version.values())

    def of(self, version: str, k: int) -> list[int]:
        """Users of each segment 0..k-1 under ``version`` (0 for an empty segment)."""
        counts = self.by_version.get(version, {})
        return [int(counts.get(segment, 0)) for segment in range(k)]

    def elsewhere(self, version: str) -> int:
        """Users whose current segment belongs to another model version (not re-assigned yet)."""
        return sum(sum(c.values()) for v, c in self.by_version.items() if v != version)


UNASSIGNED = "u"
"""The counter field of users not assigned yet."""

_SUM_COUNTERS = """#!lua flags=no-writes,allow-cross-slot-keys
-- Sum the population counter hashes named in ARGV[1] (space-separated, all on this node):
-- {field, total, field, total, ...}, fields in first-seen order.
local totals, order = {}, {}
for key in string.gmatch(ARGV[1], '[^ ]+') do
  local pairs = redis.call('HGETALL', key)
  for i = 1, #pairs, 2 do
    local name = pairs[i]
    local total = totals[name]
    if total == nil then
      order[#order + 1] = name
      total = 0
    end
    totals[name] = total + tonumber(pairs[i + 1])
  end
end
local reply = {}
for _, name in ipairs(order) do
  reply[#reply + 1] = name
  reply[#reply + 1] = totals[name]
end
return reply
"""

_TALLY_PAGE = """#!lua flags=no-writes,allow-cross-slot-keys
-- The counter field of each user hash named in ARGV (all on this node), in ARGV order:
-- "s:<seg>:<mv>", or "u" when either is missing.
local reply = {}
for i, key in ipairs(ARGV) do
  local pair = redis.call('HMGET', key, 'seg', 'mv')
  if pair[1] and pair[2] then
    reply[i] = 's:' .. pair[1] .. ':' .. pair[2]
  else
    reply[i] = 'u'
  end
end
return reply
"""

_REPLACE = """
-- Replace the counter hash KEYS[1] by the field/value pairs of ARGV (none: delete it).
redis.call('DEL', KEYS[1])
if #ARGV > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
end
return #ARGV / 2
"""


_SLOTS = range(REDIS_CLUSTER_HASH_SLOTS)


@lru_cache(maxsize=16)
def _plan(prefix: str, cluster: bool, owners: tuple[str, ...] | None) -> dict[str, str]:
    """Node name -> its counter hashes, space-separated (``""``: the single server's)."""
    by_owner: dict[str, list[str]] = {}
    for slot, key in enumerate(population_keys(prefix, cluster=cluster)):
        by_owner.setdefault("" if owners is None else owners[slot], []).append(key)
    return {name: " ".join(keys) for name, keys in by_owner.items()}


def merge_counts(
    by_version: dict[str, dict[int, int]], counts: Mapping[str, int] | Sequence[Any]
) -> int:
    """Add counter fields (a mapping, or a flat ``[field, value, ...]`` reply) to
    ``by_version``; return their unassigned users (field ``u``)."""
    items = (
        counts.items()
        if isinstance(counts, Mapping)
        else zip(counts[::2], counts[1::2], strict=True)
    )
    unassigned = 0
    for raw, value in items:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        if name == UNASSIGNED:
            unassigned += int(value)
            continue
        _, segment, version = name.split(":", 2)
        per_version = by_version.setdefault(version, {})
        per_version[int(segment)] = per_version.get(int(segment), 0) + int(value)
    return unassigned


async def _script(
    client: aioredis.Redis, text: str, node: Any, *args: Any, keys: Sequence[Any] = ()
) -> Any:
    """EVALSHA ``text`` on ``node`` (``None``: routed by ``keys``, or the single server),
    loading it on NOSCRIPT."""
    sha = _sha(text)
    target = {} if node is None else {"target_nodes": node}
    try:
        return await client.execute_command("EVALSHA", sha, len(keys), *keys, *args, **target)
    except NoScriptError:
        await client.script_load(text)
        return await client.execute_command("EVALSHA", sha, len(keys), *keys, *args, **target)


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


async def read_populations(
    client: aioredis.Redis,
    prefix: str,
    *,
    cluster: bool,
    clock: Callable[[], float] = time.time,
) -> Populations:
    """The maintained counts: every counter hash summed inside Redis, one call per primary,
    the primaries in parallel.

    ``cluster`` must be the writers' (``SEGSTREAM_REDIS_CLUSTER``): it says which counter
    hashes exist. A slot that moved to another node meanwhile makes the read learn the slot map
    again and retry once. Redis errors propagate (redis-py's).
    """
    # Once per process (~0.1 s): outside the timing, which PopulationCache's refresh rule uses.
    slot_tags()
    started = time.perf_counter()
    try:
        replies = await _sum_counters(client, prefix, cluster)
    except ResponseError as exc:
        if "non local key" not in str(exc):
            raise
        # A slot moved (resharding, failover) since the client learnt the slot map: learn it
        # again and read once more.
        await refresh_slot_map(cast(AsyncRedisCluster, client))  # only a cluster says so
        replies = await _sum_counters(client, prefix, cluster)
    by_version: dict[str, dict[int, int]] = {}
    unassigned = sum(merge_counts(by_version, reply) for reply in replies)
    return Populations(by_version, unassigned, clock(), time.perf_counter() - started)


async def _sum_counters(client: aioredis.Redis, prefix: str, cluster: bool) -> list[Any]:
    """One :data:`_SUM_COUNTERS` reply per primary."""
    nodes = await primaries(client)
    if nodes == [None]:
        plan = _plan(prefix, cluster, None)
        return [await _script(client, _SUM_COUNTERS, None, plan[""])]
    else:
        cluster_client = cast(AsyncRedisCluster, client)
        check_redis_internals()
        by_name = {node.name: node for node in nodes if node is not None}
        # The i-th counter hash lies in slot i: its owner is read off the slot map, and the
        # key lists per owner are built once per slot map (16,384 keys take ~15 ms in Python).
        owners = tuple(node_for_slot(cluster_client, slot).name for slot in range(len(_SLOTS)))
        plan = _plan(prefix, cluster, owners)
        targets = {name: by_name.get(name) or node_named(cluster_client, name) for name in plan}
        replies = await asyncio.gather(
            *(_script(client, _SUM_COUNTERS, targets[name], keys) for name, keys in plan.items())
        )
    return list(replies)


async def tally_slots(
    client: aioredis.Redis,
    prefix: str,
    *,
    cluster: bool,
    page: int = 1000,
    progress: Callable[[], None] | None = None,
) -> dict[str, Counter[str]]:
    """Walk every user hash (``SCAN`` per primary) and tally its counter field by counter hash:
    what the counters would hold if they were exact. O(users); ``progress()`` after each page.

    SCAN returns every key present for the whole walk at least once; keys are de-duplicated.
    """
    seen: set[bytes] = set()
    tallies: dict[str, Counter[str]] = {}
    pattern = user_pattern(prefix)
    for node in await primaries(client):
        cursor = 0
        while True:
            cursor, keys = await scan_page(
                client, node, cursor, match=pattern, count=page, type_="hash"
            )
            keys = [k for k in keys if k not in seen]
            seen.update(keys)
            if keys:
                fields = await _script(client, _TALLY_PAGE, node, *keys)
                for key, name in zip(keys, fields, strict=True):
                    slot = key_slot(key) if cluster else 0
                    counter = tallies.setdefault(population_slot_key(prefix, slot), Counter())
                    counter[name.decode()] += 1
            if progress is not None:
                progress()
            if cursor == 0:
                break
    return tallies


async def count_populations(
    client: aioredis.Redis,
    prefix: str,
    *,
    cluster: bool = False,
    clock: Callable[[], float] = time.time,
) -> Populations:
    """Count the populations from the user hashes themselves (:func:`tally_slots`), O(users)."""
    started = time.perf_counter()
    by_version: dict[str, dict[int, int]] = {}
    tallies = await tally_slots(client, prefix, cluster=cluster)
    unassigned = sum(merge_counts(by_version, t) for t in tallies.values())
    return Populations(by_version, unassigned, clock(), time.perf_counter() - started)


async def recount_populations(
    client: aioredis.Redis,
    prefix: str,
    *,
    cluster: bool,
    clock: Callable[[], float] = time.time,
    progress: Callable[[], None] | None = None,
) -> Populations:
    """Rebuild every counter hash from the user hashes; return the populations counted
    (``progress()`` after each page of users walked).

    Each hash is replaced atomically (one script call per hash, all in one pipeline); counter
    hashes of the prefix that the writers no longer use (another ``cluster`` setting before)
    are deleted. Exact when no writer runs meanwhile (module docstring).
    """
    started = time.perf_counter()
    tallies = await tally_slots(client, prefix, cluster=cluster, progress=progress)
    stale: set[str] = set()
    for node in await primaries(client):
        cursor = 0
        while True:
            cursor, keys = await scan_page(
                client, node, cursor, match=population_pattern(prefix), count=1000
            )
            stale.update(k.decode() for k in keys)
            if cursor == 0:
                break
    wanted = population_keys(prefix, cluster=cluster)
    stale.difference_update(wanted)
    sha = _sha(_REPLACE)
    await client.script_load(_REPLACE)
    pipe = client.pipeline(transaction=False)
    for key in [*wanted, *sorted(stale)]:
        pairs = [x for name, n in sorted(tallies.get(key, Counter()).items()) for x in (name, n)]
        pipe.execute_command("EVALSHA", sha, 1, key, *pairs)
    await pipe.execute()
    by_version: dict[str, dict[int, int]] = {}
    unassigned = sum(merge_counts(by_version, t) for t in tallies.values())
    return Populations(by_version, unassigned, clock(), time.perf_counter() - started)


@dataclass
class PopulationCache:
    """The last :class:`Populations`, read again on demand when it is old enough.

    Concurrent callers share one read. A failed read propagates to its callers and the
    previous figures are kept for the next ones.
    """

    client: aioredis.Redis
    prefix: str
    cluster: bool = False
    """The writers' ``SEGSTREAM_REDIS_CLUSTER``: which counter hashes exist."""
    min_age_s: float = 1.0
    """Never read again figures younger than this."""
    last: Populations | None = None
    last_error: BaseException | None = None
    """Why the last background read failed; ``None`` once one succeeds."""
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _taken: float = field(default=-1e18, repr=False)
    _refresh: asyncio.Future[None] | None = field(default=None, repr=False)

    def _fresh(self) -> bool:
        if self.last is None:
            return False
        max_age = max(self.min_age_s, 20 * self.last.duration_s)
        return time.monotonic() - self._taken < max_age

    async def get(self) -> Populations:
        """Figures at most ``max(min_age_s, 20 x read duration)`` seconds old."""
        if self._fresh():
            assert self.last is not None
            return self.last
        async with self._lock:
            if not self._fresh():
                self.last = await read_populations(self.client, self.prefix, cluster=self.cluster)
                self._taken = time.monotonic()
            assert self.last is not None
            return self.last

    async def quick(self) -> Populations:
        """The last figures at once, read again in the background when they are old.

        Only the very first call waits for a read. For pages that poll: a slow read never
        delays them, and its failure shows up at the next :meth:`get`.
        """
        if self.last is None:
            return await self.get()
        if not self._fresh() and not self._lock.locked():
            self._refresh = asyncio.ensure_future(self._read_quietly())
        return self.last

    async def _read_quietly(self) -> None:
        try:
            await self.get()
        except REDIS_TRANSIENT as exc:
            self.last_error = exc
            log.debug("background population read failed: %r", exc)
        else:
            self.last_error = None
