"""On the local Redis Cluster: population counters per slot, read from every primary, exact
across a failover and repaired by a recount; ``reassign`` and the namespace drop walk every
primary."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from segstream.services.redis_cluster import RedisCluster
from segstream.settings import Settings
from segstream.stream.domain.user import Settle
from segstream.stream.lifecycle.namespace import drop_namespace
from segstream.stream.lifecycle.reassign import reassign_all
from segstream.stream.state.keys import population_key, state_key, state_prefix
from segstream.stream.state.populations import (
    Populations,
    count_populations,
    read_populations,
    recount_populations,
)
from segstream.stream.state.store import RedisState
from segstream.training.artifact import publish_current, save_model
from tests.integration.services.test_redis_cluster import events, wait_replicated
from tests.integration.stacks import redis_cluster
from tests.integration.stream.conftest import app_settings
from tests.small_model import make_model

USERS = range(1, 301)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One Redis Cluster for the module, on free ports, stopped at its end."""
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as nodes:
        yield nodes


def client_of(cluster: RedisCluster) -> AsyncRedisCluster:
    """A cluster client seeded with every node, so it connects whichever node is down."""
    return AsyncRedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in cluster.nodes]
    )


def write(cluster: RedisCluster, prefix: str, users: range, offset: int, segment: int) -> None:
    """Apply one profile and one order per user at ``offset``, then settle ``segment`` (v1)."""

    async def run() -> None:
        client = client_of(cluster)
        try:
            state = RedisState(client, prefix, cluster=True)
            batch = {uid: events(uid, order_id=uid * 100 + offset, offset=offset) for uid in users}
            seen = await state.apply(batch)
            await state.settle(
                [
                    Settle(
                        s.user_id,
                        s.segment,
                        s.model_version,
                        segment,
                        "v1",
                        None if s.segment == segment else b"{}",
                        seen_changes=s.changes,
                        seen_feature_version=s.feature_version,
                    )
                    for s in seen
                ]
            )
        finally:
            await client.aclose()

    asyncio.run(run())


def populations(cluster: RedisCluster, prefix: str) -> tuple[Populations, Populations]:
    """The kept counters and a count of the user hashes."""

    async def run() -> tuple[Populations, Populations]:
        client = client_of(cluster)
        try:
            return (
                await read_populations(client, prefix, cluster=True),
                await count_populations(client, prefix, cluster=True),
            )
        finally:
            await client.aclose()

    return asyncio.run(run())


def summary(p: Populations) -> tuple[dict, int]:
    return {v: dict(c) for v, c in p.by_version.items()}, p.unassigned


def test_counters_live_in_each_users_slot_and_stay_exact_across_a_failover(
    cluster: RedisCluster,
) -> None:
    prefix = "rc-pops:"
    write(cluster, prefix, USERS, offset=1, segment=1)
    write(cluster, prefix, range(1, 101), offset=2, segment=2)
    kept, counted = populations(cluster, prefix)
    assert summary(kept) == summary(counted) == ({"v1": {1: 200, 2: 100}}, 0)
    holders = [
        port
        for port in cluster.primaries()
        if redis.Redis(port=port).keys(f"{prefix}pop:*")  # each primary holds counters
    ]
    assert len(holders) == 3

    victim = cluster.primaries()[0]
    assert wait_replicated(victim, [state_key(prefix, uid) for uid in USERS])
    cluster.kill_primary(victim)
    write(cluster, prefix, range(51, 151), offset=3, segment=3)
    write(cluster, prefix, range(301, 321), offset=1, segment=0)
    kept, counted = populations(cluster, prefix)
    assert summary(kept) == summary(counted) == ({"v1": {0: 20, 1: 150, 2: 50, 3: 100}}, 0)
    cluster.node(victim).start()
    cluster.wait_healthy(30)


def test_recount_on_the_cluster_repairs_a_skewed_slot(cluster: RedisCluster) -> None:
    prefix = "rc-recount:"
    write(cluster, prefix, range(1, 61), offset=1, segment=2)
    skewed_key = population_key(prefix, 7, cluster=True)

    async def skew() -> None:
        client = client_of(cluster)
        try:
            await client.hincrby(skewed_key, "s:2:v1", 40)
        finally:
            await client.aclose()

    async def recount() -> Populations:
        client = client_of(cluster)
        try:
            return await recount_populations(client, prefix, cluster=True)
        finally:
            await client.aclose()

    asyncio.run(skew())
    assert summary(populations(cluster, prefix)[0]) == ({"v1": {2: 100}}, 0)
    recounted = asyncio.run(recount())
    kept, counted = populations(cluster, prefix)
    assert summary(recounted) == summary(kept) == summary(counted) == ({"v1": {2: 60}}, 0)


def cluster_app(cluster: RedisCluster, kafka_bootstrap: str, tmp_path: Path) -> Settings:
    model = make_model("v1")
    save_model(model, tmp_path / "models" / "v1")
    publish_current(tmp_path / "models", tmp_path / "models" / "v1")
    return app_settings(
        kafka_bootstrap,
        cluster.url,
        app_prefix="rc",
        redis_cluster=True,
        model_dir=tmp_path / "models",
    )


def test_reassign_and_the_namespace_drop_reach_every_primary(
    cluster: RedisCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = cluster_app(cluster, kafka_bootstrap, tmp_path)
    prefix = state_prefix(settings)
    write(cluster, prefix, USERS, offset=1, segment=9)  # a segment the model never gives

    report = asyncio.run(reassign_all(settings, batch_size=64))

    assert (report.users, report.assignable, report.changed) == (300, 300, 300)
    kept, counted = populations(cluster, prefix)
    assert summary(kept) == summary(counted)
    assert sum(kept.of("v1", make_model().k)) == 300 and kept.unassigned == 0

    drop_namespace(settings)
    for port in cluster.primaries():
        assert redis.Redis(port=port).keys(f"{prefix}*") == []
