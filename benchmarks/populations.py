"""``segstream bench populations``: what reading the segment populations costs, printed.

On the configured Redis (``SEGSTREAM_REDIS_URL``; a Redis Cluster with
``SEGSTREAM_REDIS_CLUSTER=true``), under a scratch key prefix removed afterwards:

1. ``--users`` synthetic user hashes (segment, model version and features, as the worker
   leaves them) are written with pipelined HSETs, 5,000 a round trip;
2. ``segstream populations --recount`` builds their counters: the SCAN walk (one cursor per
   primary) and the per-slot counter hashes;
3. the SCAN count alone (what every population read cost before the counters), best of
   ``--scan-runs``;
4. the counter read the API, ``/metrics``, the status page and ``reassign`` now use
   (:func:`~segstream.stream.state.populations.read_populations`): median, best and worst of
   ``--reads``, after one warm-up read;
5. the two agree (checked, not assumed).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

from segstream.settings import Settings
from segstream.stream.clients.redis import redis_client, sync_redis_client
from segstream.stream.lifecycle.namespace import drop_keys
from segstream.stream.state.populations import (
    count_populations,
    read_populations,
    recount_populations,
)

__all__ = ["run_populations_bench"]

K = 6
"""Segments of the synthetic users."""


async def _fill(settings: Settings, prefix: str, users: int) -> None:
    """``users`` user hashes, segment ``uid % K`` under ``bench``, one in 10 unassigned."""
    client = redis_client(settings)
    try:
        for start in range(1, users + 1, 5_000):
            pipe = client.pipeline(transaction=False)
            for uid in range(start, min(users, start + 4_999) + 1):
                fields: dict[str, str | int] = {"age": 30 + uid % 40, "n": 1, "fv": 1}
                if uid % 10:
                    fields |= {"seg": uid % K, "mv": "bench", "cs": 1}
                pipe.hset(f"{prefix}{{u:{uid}}}", mapping=fields)
            await pipe.execute()
    finally:
        await client.aclose()


async def _measure(settings: Settings, prefix: str, users: int, reads: int, scans: int) -> None:
    cluster = settings.redis_cluster
    where = "a Redis Cluster" if cluster else "a single Redis"
    client = redis_client(settings)
    try:
        recounted = await recount_populations(client, prefix, cluster=cluster)
        print(f"recount (SCAN + write counters)  {recounted.duration_s:.2f} s")
        scan_times = []
        for _ in range(scans):
            counted = await count_populations(client, prefix, cluster=cluster)
            scan_times.append(counted.duration_s)
        print(
            f"SCAN count                       {1000 * min(scan_times):,.0f} ms (best of {scans})"
        )
        await read_populations(client, prefix, cluster=cluster)  # warm: scripts, slot map
        samples = []
        for _ in range(reads):
            kept = await read_populations(client, prefix, cluster=cluster)
            samples.append(1000 * kept.duration_s)
        print(
            f"counter read ({where})  median {statistics.median(samples):.1f} ms, "
            f"best {min(samples):.1f} ms, worst {max(samples):.1f} ms over {reads} reads"
        )
        same = (kept.by_version, kept.unassigned) == (counted.by_version, counted.unassigned)
        expected_unassigned = users // 10
        print(
            f"counters == SCAN count: {same}; {kept.users:,} users, "
            f"{kept.unassigned:,} unassigned (expected {users:,} and {expected_unassigned:,})"
        )
        if not same or kept.users != users or kept.unassigned != expected_unassigned:
            raise SystemExit("the counters disagree with the user hashes")
    finally:
        await client.aclose()


def run_populations_bench(settings: Settings, users: int, reads: int, scans: int) -> int:
    """Run the figures above against the configured Redis; returns the exit code."""
    prefix = f"bench-pops-{uuid.uuid4().hex[:8]}:"
    try:
        started = time.perf_counter()
        asyncio.run(_fill(settings, prefix, users))
        print(f"wrote {users:,} synthetic user hashes in {time.perf_counter() - started:.1f} s")
        asyncio.run(_measure(settings, prefix, users, reads, scans))
    finally:
        client = sync_redis_client(settings)
        try:
            drop_keys(client, prefix + "*")
        finally:
            client.close()
    return 0
