"""``segstream bench drift``: what drift epochs cost in Redis, printed as figures.

- a ``settle`` call of ``--users`` rows that only store a drift epoch (drift mode writes one
  for every assigned user whose segment did not change) against the same call of rows that
  only read the outbox (without drift those users need no row at all);
- a drift update that publishes an epoch (and so sweeps the hash) with ``--epochs`` epochs
  kept, against one that does not, and the ``MEMORY USAGE`` of that hash (k=5).

Synthetic users and drift state under a scratch key prefix of the configured Redis, removed
afterwards. Times are client round trips (one call each), medians of ``--repeat``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import redis.asyncio as aioredis

from segstream.settings import Settings
from segstream.stream.clients.redis import redis_client
from segstream.stream.domain.user import Settle
from segstream.stream.drift.shared import DriftStore, drift_key
from segstream.stream.state.keys import state_key
from segstream.stream.state.store import RedisState
from segstream.training.artifact import Model

__all__ = ["run_drift_bench"]

K = 5
"""Segments of the synthetic drift state."""


@dataclass(frozen=True, eq=False)
class _Trained:
    """What :class:`DriftStore` reads of a model (its version and trained centres), without
    training one: the figures here depend on k only."""

    version: str
    centers: np.ndarray

    @property
    def k(self) -> int:
        return len(self.centers)


async def _median_ms(repeat: int, call: Callable[[int], Awaitable[object]]) -> float:
    samples = []
    for i in range(repeat):
        started = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - started)
    return 1000 * statistics.median(samples)


async def _settle_figures(client: aioredis.Redis, prefix: str, users: int, repeat: int) -> None:
    state = RedisState(client, prefix)
    pipe = client.pipeline(transaction=False)
    for uid in range(1, users + 1):  # as a worker leaves them: segment 1 of v1, one change
        pipe.hset(state_key(prefix, uid), mapping={"seg": 1, "mv": "v1", "cs": 1, "fv": 1})
    await pipe.execute()

    def rows(epoch: int | None) -> list[Settle]:
        return [Settle(uid, 1, "v1", 1, "v1", None, "", 1, 1, epoch) for uid in range(1, users + 1)]

    with_epoch = await _median_ms(repeat, lambda i: state.settle(rows(i + 1)))
    read_only = await _median_ms(repeat, lambda i: state.settle(rows(None)))
    print(
        f"settle, epoch-only rows  {users:,} users: {with_epoch:.1f} ms a call, "
        f"{1000 * with_epoch / users:.1f} us a user (drift mode, segment unchanged)"
    )
    print(
        f"settle, read-only rows   {users:,} users: {read_only:.1f} ms a call, "
        f"{1000 * read_only / users:.1f} us a user (for comparison; without drift: no row)"
    )


async def _epoch_figures(client: aioredis.Redis, prefix: str, epochs: int, repeat: int) -> None:
    rng = np.random.default_rng(0)
    model = cast(Model, _Trained("bench", rng.normal(0, 1.5, (K, 2))))
    publishing = DriftStore(client, prefix, epoch_s=0.0, epochs_kept=epochs)
    for sequence in range(1, epochs + 1):
        await publishing.update(model, rng.normal(0, 1e-3, (K, 2)), 1, 1.0, "w", sequence)

    def update(store: DriftStore, base: int) -> Callable[[int], Awaitable[object]]:
        return lambda i: store.update(model, rng.normal(0, 1e-3, (K, 2)), 1, 1.0, "w", base + i)

    publish = await _median_ms(repeat, update(publishing, epochs + 1))
    quiet = DriftStore(client, prefix, epoch_s=86_400.0, epochs_kept=epochs)
    plain = await _median_ms(repeat, update(quiet, epochs + repeat + 1))
    key = drift_key(prefix, model.version)
    size = await client.memory_usage(key, samples=0)
    print(
        f"drift update             {publish:.2f} ms publishing an epoch ({epochs:,} kept: one "
        f"sweep of the hash), {plain:.2f} ms without"
    )
    print(
        f"drift hash               {size:,} B with {epochs:,} epochs (k={K}), "
        f"{size / epochs:.0f} B an epoch"
    )


async def _bench(settings: Settings, users: int, epochs: int, repeat: int) -> None:
    prefix = f"bench-drift-{uuid.uuid4().hex[:8]}:"
    client = redis_client(settings)
    try:
        await _settle_figures(client, prefix, users, repeat)
        await _epoch_figures(client, prefix, epochs, repeat)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=5_000)]
        for start in range(0, len(keys), 1_000):
            await client.unlink(*keys[start : start + 1_000])
        await client.aclose()


def run_drift_bench(settings: Settings, users: int, epochs: int, repeat: int) -> int:
    """Run the figures above against the configured Redis; returns the exit code."""
    asyncio.run(_bench(settings, users, epochs, repeat))
    return 0
