"""The local Redis Cluster: six real redis-server nodes, the product's Lua scripts, a failover."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest
import redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.crc import key_slot

from segstream.errors import ReplicaWaitTimeout
from segstream.services.redis_cluster import RedisCluster
from segstream.stream.domain.events import Event, OrderEvent, OrderItem, Source, UserEvent
from segstream.stream.domain.user import Settle
from segstream.stream.state.keys import state_key
from segstream.stream.state.store import RedisState
from tests.integration.stacks import redis_cluster

PREFIX = "rc-state:"
USERS = range(1, 121)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One Redis Cluster for the module, on free ports, stopped at its end."""
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as nodes:
        yield nodes


def events(uid: int, order_id: int, offset: int) -> list[tuple[Source, Event]]:
    profile = UserEvent(uid, 20 + uid % 50, "F", "Japan", "Search", "2023-01-01T00:00:00Z")
    item = OrderItem(order_id * 10, f"Brand {uid % 7}", "Jeans", 9.5)
    order = OrderEvent(order_id, uid, "Processing", "2023-01-02T00:00:00Z", (item,))
    return [(Source("users", uid % 4, offset), profile), (Source("orders", uid % 4, offset), order)]


def client_of(cluster: RedisCluster) -> AsyncRedisCluster:
    """A cluster client seeded with every node, so it connects whichever node is down."""
    nodes = [ClusterNode("127.0.0.1", node.port) for node in cluster.nodes]
    return AsyncRedisCluster(startup_nodes=nodes)


def apply(cluster: RedisCluster, batch: dict[int, list[tuple[Source, Event]]]) -> dict[int, int]:
    """Apply ``batch`` through a fresh RedisCluster client; user -> total_orders."""

    async def run() -> dict[int, int]:
        client = client_of(cluster)
        try:
            state = RedisState(client, PREFIX, cluster=True)
            states = await state.apply(batch)
            await state.settle(
                [Settle(s.user_id, s.segment, s.model_version, 1, "v1", None) for s in states]
            )
        finally:
            await client.aclose()
        return {s.user_id: s.total_orders for s in states}

    return asyncio.run(run())


def test_three_primaries_each_with_a_replica_report_cluster_state_ok(
    cluster: RedisCluster,
) -> None:
    roles = [r.role for r in cluster.status()]
    assert sorted(roles) == ["primary"] * 3 + ["replica"] * 3
    for node in cluster.nodes:
        info = node.info("cluster")
        assert info["cluster_state"] == "ok"
        assert info["cluster_slots_assigned"] == "16384"
        assert info["cluster_known_nodes"] == "6"


def test_a_cluster_client_from_the_seed_url_spreads_keys_over_every_primary(
    cluster: RedisCluster,
) -> None:
    async def write() -> None:
        client = AsyncRedisCluster.from_url(cluster.url)
        try:
            for i in range(300):
                await client.set(f"spread:{i}", i)
            assert [
                int(v) for v in await client.mget_nonatomic(*(f"spread:{i}" for i in range(300)))
            ] == list(range(300))
        finally:
            await client.aclose()

    asyncio.run(write())
    sizes = [redis.Redis(port=port).dbsize() for port in cluster.primaries()]
    assert len(sizes) == 3 and all(size > 0 for size in sizes)


def test_killing_a_primary_promotes_its_replica_and_keeps_the_data(
    cluster: RedisCluster,
) -> None:
    keys = [f"rc:{{u:{uid}}}" for uid in USERS]

    async def write() -> None:
        client = client_of(cluster)
        try:
            for uid, key in zip(USERS, keys, strict=True):
                await client.hset(key, mapping={"n": uid})
        finally:
            await client.aclose()

    async def read() -> list[int]:
        client = client_of(cluster)
        try:
            return [int(await client.hget(key, "n")) for key in keys]
        finally:
            await client.aclose()

    asyncio.run(write())
    victim = cluster.primaries()[0]
    owned = wait_replicated(victim, keys)
    assert owned, "the victim holds none of the keys"

    failover = cluster.kill_primary(victim)

    assert failover.killed == victim
    assert failover.promoted in cluster.primaries()
    assert victim not in cluster.primaries()
    assert asyncio.run(read()) == list(USERS)
    cluster.node(victim).start()
    cluster.wait_healthy(30)
    assert {r.port: r.role for r in cluster.status()}[victim] == "replica"


def test_the_state_scripts_run_per_hash_slot_and_keep_counting_across_a_failover(
    cluster: RedisCluster,
) -> None:
    first = {uid: events(uid, order_id=uid, offset=1) for uid in USERS}
    assert len({key_slot(state_key(PREFIX, uid).encode()) for uid in USERS}) > 100
    assert apply(cluster, first) == {uid: 1 for uid in USERS}
    # Redelivered: fenced on the stored offsets, nothing counted twice.
    assert apply(cluster, first) == {uid: 1 for uid in USERS}

    victim = cluster.primaries()[0]
    assert wait_replicated(victim, [state_key(PREFIX, uid) for uid in USERS])
    cluster.kill_primary(victim)
    # The next order of every user, those of the dead primary's slots included, counts on
    # top (the promoted replica loads the scripts it lacks on NOSCRIPT).
    later = apply(cluster, {uid: events(uid, order_id=1000 + uid, offset=2) for uid in USERS})
    assert later == {uid: 2 for uid in USERS}
    cluster.node(victim).start()
    cluster.wait_healthy(30)


def wait_replicated(primary_port: int, keys: list[str]) -> list[str]:
    """The keys of ``keys`` the primary holds, once its replica has acknowledged every write.

    Redis replicates asynchronously: ``WAIT`` makes the test's writes survive the crash.
    """
    with redis.Redis(port=primary_port) as primary:
        assert primary.wait(1, 5000) == 1
        slots = {k: key_slot(k.encode()) for k in keys}
        return [k for k in keys if primary.execute_command("CLUSTER COUNTKEYSINSLOT", slots[k])]


def apply_waiting(
    cluster: RedisCluster, batch: dict[int, list[tuple[Source, Event]]], timeout_ms: int = 1000
) -> None:
    """``apply`` then ``settle`` with ``min_replicas=1``: WAIT per primary before returning."""

    async def run() -> None:
        client = client_of(cluster)
        try:
            state = RedisState(
                client, PREFIX, cluster=True, min_replicas=1, wait_timeout_ms=timeout_ms
            )
            states = await state.apply(batch)
            await state.settle(
                [Settle(s.user_id, s.segment, s.model_version, 2, "v1", None) for s in states]
            )
        finally:
            await client.aclose()

    asyncio.run(run())


def replica_of(cluster: RedisCluster, primary: int) -> int:
    """Client port of the replica in sync with ``primary``."""
    for node in cluster.nodes:
        info = node.info("replication")
        if info.get("role") == "slave" and info.get("master_port") == str(primary):
            return node.port
    raise AssertionError(f"primary {primary} has no replica")


def test_with_min_replicas_every_primarys_replica_has_the_writes_when_apply_returns(
    cluster: RedisCluster,
) -> None:
    users = range(2001, 2121)
    apply_waiting(cluster, {uid: events(uid, order_id=uid, offset=1) for uid in users})
    keys = {uid: state_key(PREFIX, uid) for uid in users}
    seen = 0
    for primary in cluster.primaries():
        with redis.Redis(port=primary) as p, redis.Redis(port=replica_of(cluster, primary)) as r:
            for key in keys.values():
                if not p.execute_command("CLUSTER COUNTKEYSINSLOT", key_slot(key.encode())):
                    continue  # another primary's
                # No polling: WAIT returned only once the replica had the writes.
                r.execute_command("READONLY")
                assert r.hgetall(key) == p.hgetall(key) != {}
                seen += 1
    assert seen == len(users)


def test_a_paused_replica_times_out_the_step_naming_its_primary(cluster: RedisCluster) -> None:
    users = range(3001, 3121)
    primary = cluster.primaries()[0]
    replica = cluster.node(replica_of(cluster, primary))
    pid = replica.process.pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(ReplicaWaitTimeout) as caught:
            apply_waiting(cluster, {uid: events(uid, order_id=uid, offset=1) for uid in users}, 300)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert f"primary 127.0.0.1:{primary}" in str(caught.value)
    # Resumed, the same batch (redelivered) goes through, counted once.
    apply_waiting(cluster, {uid: events(uid, order_id=uid, offset=1) for uid in users})
    assert apply(cluster, {uid: events(uid, order_id=uid, offset=1) for uid in users}) == {
        uid: 1 for uid in users
    }
