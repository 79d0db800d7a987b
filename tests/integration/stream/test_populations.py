"""Segment populations kept by the state scripts: exact through new users, changes, version
moves and redeliveries, and repaired by a recount."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
import redis
import redis.asyncio as aioredis

from segstream.stream.domain.user import Settle
from segstream.stream.state.keys import population_key, state_key, state_prefix
from segstream.stream.state.populations import (
    Populations,
    count_populations,
    read_populations,
    recount_populations,
)
from segstream.stream.state.store import RedisState
from tests.integration.stream.conftest import app_settings, cli_json
from tests.integration.stream.user_events import profile_and_order

PREFIX = "pops:"


def _run(url: str, cluster: bool, steps: Sequence[tuple[str, object]]) -> Populations:
    """:func:`_steps`, blocking."""
    return asyncio.run(_steps(url, cluster, steps))


async def _steps(url: str, cluster: bool, steps: Sequence[tuple[str, object]]) -> Populations:
    """Run ``steps`` through one RedisState: ("apply", {uid: offset}) applies the users'
    events at that offset; ("settle", (uids, segment, version)) settles them."""
    client = aioredis.Redis.from_url(url)
    try:
        state = RedisState(client, PREFIX, cluster=cluster)
        for kind, arg in steps:
            if kind == "apply":
                assert isinstance(arg, dict)
                await state.apply(
                    {uid: profile_and_order(uid, offset) for uid, offset in arg.items()}
                )
            else:
                uids, segment, version = arg  # type: ignore[misc]
                seen = {s.user_id: s for s in await state.apply(dict.fromkeys(uids, ()))}
                await state.settle(
                    [
                        Settle(
                            uid,
                            seen[uid].segment,
                            seen[uid].model_version,
                            segment,
                            version,
                            b"{}" if segment != seen[uid].segment else None,
                            seen_changes=seen[uid].changes,
                            seen_feature_version=seen[uid].feature_version,
                        )
                        for uid in uids
                    ]
                )
        kept = await read_populations(client, PREFIX, cluster=cluster)
        counted = await count_populations(client, PREFIX, cluster=cluster)
        assert (kept.by_version, kept.unassigned) == (counted.by_version, counted.unassigned)
        return kept
    finally:
        await client.aclose()


def _stale_settle(url: str, uid: int, cluster: bool) -> None:
    """A settle row whose seen change count is out of date: refused, so nothing may move."""

    async def run() -> frozenset[int]:
        client = aioredis.Redis.from_url(url)
        try:
            state = RedisState(client, PREFIX, cluster=cluster)
            (seen,) = await state.apply({uid: ()})
            outcome = await state.settle_outcome(
                [
                    Settle(
                        uid,
                        seen.segment,
                        seen.model_version,
                        4,
                        "v9",
                        b"{}",
                        seen_changes=seen.changes + 5,
                        seen_feature_version=seen.feature_version,
                    )
                ]
            )
            return outcome.refused
        finally:
            await client.aclose()

    assert asyncio.run(run()) == {uid}


@pytest.mark.parametrize("cluster", [False, True], ids=["one-hash", "per-slot"])
def test_counts_follow_new_users_changes_version_moves_and_redeliveries(
    redis_client: redis.Redis, redis_url: str, cluster: bool
) -> None:
    first = _run(redis_url, cluster, [("apply", dict.fromkeys(range(1, 31), 1))])
    assert (first.by_version, first.unassigned) == ({}, 30)
    steps: list[tuple[str, object]] = [
        ("settle", (range(1, 21), 1, "v1")),  # 20 assigned
        ("apply", dict.fromkeys(range(1, 31), 1)),  # a redelivery: nobody is new
        ("apply", dict.fromkeys(range(31, 36), 1)),  # 5 new users
        ("settle", (range(1, 11), 2, "v1")),  # 10 change segment
        ("settle", (range(11, 16), 1, "v2")),  # 5 keep it under a new version
        ("apply", dict.fromkeys(range(1, 11), 2)),  # fresh events of known users
    ]
    kept = _run(redis_url, cluster, steps)
    assert kept.by_version == {"v1": {1: 5, 2: 10}, "v2": {1: 5}}
    assert kept.unassigned == 15
    _stale_settle(redis_url, 3, cluster)
    again = _run(redis_url, cluster, [])
    assert (again.by_version, again.unassigned) == (kept.by_version, kept.unassigned)


def test_recount_repairs_skewed_counters_and_drops_unused_ones(
    redis_client: redis.Redis, redis_url: str
) -> None:
    _run(redis_url, False, [("apply", dict.fromkeys(range(1, 41), 1))])
    kept = _run(redis_url, False, [("settle", (range(1, 26), 3, "v1"))])
    key = population_key(PREFIX, 1, cluster=False)
    redis_client.hincrby(key, "s:3:v1", 7)
    redis_client.hdel(key, "u")
    stray = population_key(PREFIX, 1, cluster=True)  # left by a per-slot writer
    redis_client.hset(stray, "s:0:v0", 4)

    async def repair() -> tuple[Populations, Populations, Populations]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            skewed = await read_populations(client, PREFIX, cluster=False)
            recounted = await recount_populations(client, PREFIX, cluster=False)
            return skewed, recounted, await read_populations(client, PREFIX, cluster=False)
        finally:
            await client.aclose()

    skewed, recounted, repaired = asyncio.run(repair())
    assert (skewed.by_version, skewed.unassigned) == ({"v1": {3: 32}}, 0)
    for populations in (recounted, repaired):
        assert (populations.by_version, populations.unassigned) == ({"v1": {3: 25}}, 15)
    assert (kept.by_version, kept.unassigned) == ({"v1": {3: 25}}, 15)
    assert not redis_client.exists(stray)
    assert redis_client.hgetall(key) == {b"s:3:v1": b"25", b"u": b"15"}


def test_the_cli_counts_hashes_written_without_counters_only_after_a_recount(
    redis_client: redis.Redis, redis_url: str, kafka_bootstrap: str
) -> None:
    # State written before the counters existed (an upgrade): hashes, no counter hash.
    settings = app_settings(kafka_bootstrap, redis_url, app_prefix="popcli", create_topics=False)
    prefix = state_prefix(settings)
    for uid, segment in ((1, "0"), (2, "0"), (3, "2")):
        redis_client.hset(state_key(prefix, uid), mapping={"seg": segment, "mv": "v7", "n": 1})
    redis_client.hset(state_key(prefix, 4), mapping={"age": 30})

    before = cli_json(settings, "populations")
    recounted = cli_json(settings, "populations", "--recount")
    after = cli_json(settings, "populations")

    assert (before["users"], before["by_version"]) == (0, {})
    expected = {"users": 4, "unassigned": 1, "by_version": {"v7": {"0": 2, "2": 1}}}
    for document in (recounted, after):
        assert {k: document[k] for k in expected} == expected
    assert (recounted["recounted"], after["recounted"]) == (True, False)
