"""Segment populations: users per segment and model version, counted from the user hashes.

Counted, not maintained: :func:`count_populations` walks the user hashes with
``SCAN ... TYPE hash`` and tallies each page's ``seg``/``mv`` inside Redis (one small Lua script
per page of 1,000 keys, about a millisecond of server time, so the worker is never held up for
long; a pipeline of HMGETs instead spends 15 µs per user in redis-py). Counting is exact and
needs nothing from the worker, which a counter updated next to ``settle`` could not promise: a
crash between the two writes would skew it for good. It costs O(users) per count, so
:class:`PopulationCache` recounts at most every ``min_age_s`` seconds, and never more often than
20 times the last count's duration, which keeps the share of time spent counting under about
5%. (On a Redis Cluster a page would have to be split by hash slot before the script call;
segstream runs one Redis server today.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from segstream.stream.clients.retry import REDIS_TRANSIENT
from segstream.stream.state.keys import user_pattern

__all__ = ["PopulationCache", "Populations", "count_populations", "merge_page"]

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
    """How long the count took."""

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


_TALLY_PAGE = """
-- Tally seg/mv of the user hashes in KEYS: {unassigned, mv, seg, users, mv, seg, users, ...}.
local counts, order, unassigned = {}, {}, 0
for _, key in ipairs(KEYS) do
  local pair = redis.call('HMGET', key, 'seg', 'mv')
  if pair[1] and pair[2] then
    local id = pair[2] .. '\0' .. pair[1]
    if counts[id] == nil then
      counts[id] = 0
      order[#order + 1] = {pair[2], pair[1], id}
    end
    counts[id] = counts[id] + 1
  else
    unassigned = unassigned + 1
  end
end
local reply = {unassigned}
for _, entry in ipairs(order) do
  reply[#reply + 1] = entry[1]
  reply[#reply + 1] = entry[2]
  reply[#reply + 1] = counts[entry[3]]
end
return reply
"""


def merge_page(by_version: dict[str, dict[int, int]], reply: list[bytes | int]) -> int:
    """Add one page's tally (the script's reply) to ``by_version``; returns its unassigned."""
    for i in range(1, len(reply), 3):
        version = reply[i].decode() if isinstance(reply[i], bytes) else str(reply[i])
        segment, users = int(reply[i + 1]), int(reply[i + 2])
        counts = by_version.setdefault(version, {})
        counts[segment] = counts.get(segment, 0) + users
    return int(reply[0])


async def count_populations(
    client: aioredis.Redis, prefix: str, *, page: int = 1000, clock: Callable[[], float] = time.time
) -> Populations:
    """Count every user hash's segment: one SCAN page, then one tally script call, at a time.

    SCAN guarantees every key present for the whole walk is seen once at least; a key created
    during it may be missed and, with a rehash, a key may be returned twice, so keys are
    de-duplicated. Redis errors propagate (redis-py's).
    """
    started = time.perf_counter()
    script = client.register_script(_TALLY_PAGE)
    seen: set[bytes] = set()
    by_version: dict[str, dict[int, int]] = {}
    unassigned = 0
    cursor = 0
    pattern = user_pattern(prefix)
    while True:
        cursor, keys = await client.scan(cursor, match=pattern, count=page, _type="HASH")
        keys = [k for k in keys if k not in seen]
        seen.update(keys)
        if keys:
            unassigned += merge_page(by_version, await script(keys=keys))
        if cursor == 0:
            break
    return Populations(by_version, unassigned, clock(), time.perf_counter() - started)


@dataclass
class PopulationCache:
    """The last :class:`Populations`, recounted on demand when it is old enough.

    Concurrent callers share one count. A failed count propagates to its callers and the
    previous figures are kept for the next ones.
    """

    client: aioredis.Redis
    prefix: str
    min_age_s: float = 5.0
    """Never recount figures younger than this."""
    last: Populations | None = None
    last_error: BaseException | None = None
    """Why the last background recount failed; ``None`` once one succeeds."""
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _taken: float = field(default=-1e18, repr=False)
    _refresh: asyncio.Future[None] | None = field(default=None, repr=False)

    def _fresh(self) -> bool:
        if self.last is None:
            return False
        max_age = max(self.min_age_s, 20 * self.last.duration_s)
        return time.monotonic() - self._taken < max_age

    async def get(self) -> Populations:
        """Figures at most ``max(min_age_s, 20 x count duration)`` seconds old."""
        if self._fresh():
            assert self.last is not None
            return self.last
        async with self._lock:
            if not self._fresh():
                self.last = await count_populations(self.client, self.prefix)
                self._taken = time.monotonic()
            assert self.last is not None
            return self.last

    async def quick(self) -> Populations:
        """The last figures at once, recounting in the background when they are old.

        Only the very first call waits for a count. For pages that poll: a slow recount
        never delays them, and its failure shows up at the next :meth:`get`.
        """
        if self.last is None:
            return await self.get()
        if not self._fresh() and not self._lock.locked():
            self._refresh = asyncio.ensure_future(self._recount_quietly())
        return self.last

    async def _recount_quietly(self) -> None:
        try:
            await self.get()
        except REDIS_TRANSIENT as exc:
            self.last_error = exc
            log.debug("background population count failed: %r", exc)
        else:
            self.last_error = None
