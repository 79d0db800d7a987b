"""WAIT for replicas before a batch is acknowledged: a real primary and replica, one paused.

The replica is paused with SIGSTOP: it stays connected (the primary still counts it) but
acknowledges nothing, which is what a replica lagging behind looks like to ``WAIT``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from segstream.errors import ConfigError, ReplicaWaitTimeout
from segstream.services.redis import RedisServer
from segstream.settings import Settings, load_settings, load_stack_settings
from segstream.stream.clients.kafka import producer as kafka_producer
from segstream.stream.domain.events import Event, OrderEvent, OrderItem, Source, UserEvent
from segstream.stream.domain.topics import Topics
from segstream.stream.drift.shared import shared_drift
from segstream.stream.http.metrics import Metrics
from segstream.stream.kafka.publisher import AiokafkaSender
from segstream.stream.state.keys import state_key, state_prefix
from segstream.stream.state.replicas import STANDALONE, ReplicaShortfall, online_replicas
from segstream.stream.state.store import RedisState
from segstream.stream.worker.assigner import Assigner
from segstream.stream.worker.processor import BatchProcessor
from segstream.stream.worker.run import check_dependencies
from tests.integration.stream.acl_user import confine
from tests.integration.stream.conftest import (
    Dataset,
    WorkerProcess,
    app_settings,
    input_lag,
    replay,
    wait_until_consumed,
)
from tests.integration.stream.faults.conftest import chunks, metric, wait_for
from tests.integration.stream.parity import check_parity
from tests.ports import free_port
from tests.waiting import wait_until

PREFIX = "wait:"
TIMEOUT_MS = 300


@dataclass(frozen=True)
class Pair:
    """A Redis primary and its one replica, both real servers of the product's own config."""

    primary: RedisServer
    replica: RedisServer

    def replica_pid(self) -> int:
        pid = self.replica.process.pid()
        assert pid is not None
        return pid


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    servers = [
        RedisServer(
            load_settings(data_dir=tmp_path_factory.mktemp(f"redis-{role}")),
            load_stack_settings(redis_port=free_port()),
        )
        for role in ("primary", "replica")
    ]
    primary, replica = servers
    for server in servers:
        server.start()
    try:
        with redis.Redis.from_url(replica.url) as client:
            client.replicaof("127.0.0.1", primary.stack.redis_port)
            wait_until(
                lambda: client.info("replication").get("master_link_status") == "up",
                30,
                "the replica never synced",
                interval_s=0.05,
            )
        yield Pair(primary, replica)
    finally:
        for server in servers:
            server.stop()


@contextmanager
def paused(pair: Pair) -> Iterator[None]:
    """The replica stopped (SIGSTOP) for the block, then resumed whatever happened."""
    os.kill(pair.replica_pid(), signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pair.replica_pid(), signal.SIGCONT)


def batch(uid: int, offset: int) -> dict[int, list[tuple[Source, Event]]]:
    profile = UserEvent(uid, 33, "F", "Japan", "Search", "2023-01-01T00:00:00Z")
    item = OrderItem(7, "Brand", "Jeans", 9.5)
    order = OrderEvent(uid * 10 + offset, uid, "Complete", "2023-01-02T00:00:00Z", (item,))
    return {uid: [(Source("users", 0, offset), profile), (Source("orders", 0, offset), order)]}


async def apply_fresh(
    url: str, events: dict[int, list[tuple[Source, Event]]], min_replicas: int = 1
) -> float:
    """``RedisState.apply`` through a fresh client (fresh connections); returns its seconds."""
    client = aioredis.Redis.from_url(url)
    state = RedisState(client, PREFIX, min_replicas=min_replicas, wait_timeout_ms=TIMEOUT_MS)
    started = time.monotonic()
    try:
        await state.apply(events)
    finally:
        await client.aclose()
    return time.monotonic() - started


def apply(url: str, events: dict[int, list[tuple[Source, Event]]], min_replicas: int = 1) -> float:
    """:func:`apply_fresh` in an event loop of its own."""
    return asyncio.run(apply_fresh(url, events, min_replicas))


def hash_of(url: str, uid: int) -> dict[bytes, bytes]:
    with redis.Redis.from_url(url) as client:
        return client.hgetall(state_key(PREFIX, uid))


def test_apply_returns_once_the_replica_has_its_writes(pair: Pair) -> None:
    apply(pair.primary.url, batch(1, offset=1))
    # No polling: with WAIT the replica had the write before apply returned.
    assert hash_of(pair.replica.url, 1) == hash_of(pair.primary.url, 1) != {}


def test_a_paused_replica_times_the_step_out_with_the_settings_named(pair: Pair) -> None:
    with paused(pair), pytest.raises(ReplicaWaitTimeout) as caught:
        apply(pair.primary.url, batch(2, offset=1))
    assert "0 of the 1 Redis replica(s)" in str(caught.value)
    assert "SEGSTREAM_REDIS_MIN_REPLICAS" in str(caught.value)
    assert "SEGSTREAM_REDIS_WAIT_TIMEOUT_MS" in str(caught.value)
    assert hash_of(pair.primary.url, 2), "the primary has the write, unconfirmed"


def test_a_retry_on_a_connection_with_an_older_write_still_waits_for_the_first_attempt(
    pair: Pair,
) -> None:
    """A WAIT on a connection other than the one that wrote proves nothing: on the retry's
    connection, whose own last write was replicated, it returns 1 at once while the replica
    is paused. The retry's scripts write nothing (fenced); its WAIT, after its marker write
    on the same connection, still covers the first attempt's writes and times out.

    (Redis 7.0.15 also moves a connection's replication offset on an EVALSHA that writes
    nothing, so here the scripts alone would do as well; the marker does not rely on it.)"""
    events = batch(3, offset=1)

    async def run() -> None:
        # One connection for the retry, as a pool hands out one that wrote before.
        client = aioredis.Redis.from_url(pair.primary.url, single_connection_client=True)
        retrying = RedisState(client, PREFIX, min_replicas=1, wait_timeout_ms=TIMEOUT_MS)
        try:
            await client.set(f"{PREFIX}older", 1)
            assert await client.wait(1, 5000) == 1
            with paused(pair):
                with pytest.raises(ReplicaWaitTimeout):
                    await apply_fresh(pair.primary.url, events)  # its own connections
                # What the naive WAIT would see on the retry's connection:
                assert await client.wait(1, TIMEOUT_MS) == 1
                with pytest.raises(ReplicaWaitTimeout):
                    await retrying.apply(events)  # redelivered: fenced, writes nothing
            await retrying.apply(events)
        finally:
            await client.aclose()

    asyncio.run(run())
    assert hash_of(pair.replica.url, 3) == hash_of(pair.primary.url, 3) != {}


def replicate(pair: Pair) -> None:
    """Make the replica follow the primary again and wait until it is in sync, on both sides:
    the primary marks its replica online (what the worker counts) a moment after the
    replica sees its link up."""
    with redis.Redis.from_url(pair.replica.url) as client:
        client.replicaof("127.0.0.1", pair.primary.stack.redis_port)
        wait_until(
            lambda: client.info("replication").get("master_link_status") == "up",
            60,
            "the replica never synced",
            interval_s=0.05,
        )
    with redis.Redis.from_url(pair.primary.url) as client:
        wait_until(
            lambda: online_replicas(client.info("replication")) >= 1,
            60,
            "the primary never counted its replica online",
            interval_s=0.05,
        )


def wait_calls(pair: Pair) -> int:
    """``WAIT`` commands the primary has run since it started."""
    with redis.Redis.from_url(pair.primary.url) as client:
        return int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


def test_a_primary_whose_replica_is_gone_is_written_degraded_then_waited_for_again(
    pair: Pair,
) -> None:
    """A replica down for good is not a late one: the step is accepted without it (no WAIT
    for it afterwards), the shortfall names the server, and once a replica is back and
    counted again, steps wait for it again."""

    async def run(uid: int, shortfall: ReplicaShortfall) -> None:
        client = aioredis.Redis.from_url(pair.primary.url)
        state = RedisState(
            client, PREFIX, min_replicas=1, wait_timeout_ms=TIMEOUT_MS, shortfall=shortfall
        )
        try:
            await state.apply(batch(uid, offset=1))
        finally:
            await client.aclose()

    shortfall = ReplicaShortfall(1, recheck_s=0.0)  # count again before every step
    pair.replica.stop()
    try:
        with redis.Redis.from_url(pair.primary.url) as client:
            wait_until(
                lambda: not client.info("replication").get("connected_slaves"),
                30,
                "the primary still counts its replica",
                interval_s=0.05,
            )
        asyncio.run(run(11, shortfall))  # its WAIT comes back short: counted, accepted
        assert shortfall.degraded() == {STANDALONE: 0}
        assert "SEGSTREAM_REDIS_MIN_REPLICAS" in shortfall.reasons()[0]
        before = wait_calls(pair)
        asyncio.run(run(12, shortfall))
        assert wait_calls(pair) == before, "no WAIT is sent for replicas that are not there"
        assert hash_of(pair.primary.url, 12), "the degraded write is on the primary"
    finally:
        pair.replica.start()
        replicate(pair)
    before = wait_calls(pair)
    asyncio.run(run(13, shortfall))
    assert shortfall.degraded() == {}
    assert wait_calls(pair) == before + 1, "the replica is back: the step waits for it"
    assert hash_of(pair.replica.url, 13) == hash_of(pair.primary.url, 13) != {}


def test_without_min_replicas_nothing_waits(pair: Pair) -> None:
    before = wait_calls(pair)
    with paused(pair):  # a silent replica: any WAIT would time out
        apply(pair.primary.url, batch(4, offset=1), min_replicas=0)
    assert wait_calls(pair) == before, "no WAIT was sent"
    assert hash_of(pair.primary.url, 4), "the write is on the primary"


def test_the_worker_refuses_to_start_when_min_replicas_exceeds_the_replicas(pair: Pair) -> None:
    settings = load_settings(redis_url=pair.primary.url, redis_min_replicas=2, startup_timeout_s=5)
    with pytest.raises(ConfigError) as caught:
        asyncio.run(check_dependencies(settings))
    text = str(caught.value)
    assert "SEGSTREAM_REDIS_MIN_REPLICAS is 2" in text
    assert "has 1 replica(s) connected" in text
    assert "SEGSTREAM_REDIS_MIN_REPLICAS=1" in text


@pytest.mark.slow
def test_a_worker_acks_nothing_while_the_replica_is_paused_then_catches_up_losslessly(
    pair: Pair,
    kafka_bootstrap: str,
    dataset: Dataset,
    start_worker,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    settings = app_settings(
        kafka_bootstrap,
        pair.primary.url,
        model_dir=dataset.models_dir,
        data_dir=tmp_path / "worker-data",
        batch_size=500,
        redis_min_replicas=1,
        redis_wait_timeout_ms=200,
    )
    # As the ACL user of docs/operations.md: with MIN_REPLICAS=1 the worker also sends the
    # start-up replica check, the WAIT marker and WAIT, and retries them; all must be allowed.
    ports = [pair.primary.stack.redis_port, pair.replica.stack.redis_port]
    user = confine(request, settings.app_id, ports)
    settings = user.settings(settings)
    parts = chunks(dataset.plan, 3)
    worker: WorkerProcess = start_worker(settings)
    replay(settings, parts[0])
    wait_until_consumed(settings, [worker])
    assert metric(worker, "segstream_redis_wait_timeouts_total") == 0
    with paused(pair):
        replay(settings, parts[1])
        wait_for(
            lambda: metric(worker, "segstream_redis_wait_timeouts_total") >= 3,
            60,
            "the worker to count WAIT timeouts",
        )
        lag = input_lag(settings)
        assert lag > 0, "a batch was acked that no replica had"
        assert worker.process.poll() is None, worker.log_tail()
        assert "SEGSTREAM_REDIS_MIN_REPLICAS" in worker.log_tail(200)
    replay(settings, parts[2])
    wait_until_consumed(settings, [worker])
    assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
    check_parity(settings, dataset, tmp_path)
    # Every acked batch is on the replica: its users' hashes equal the primary's.
    prefix = state_prefix(settings)
    with redis.Redis.from_url(pair.primary.url) as p, redis.Redis.from_url(pair.replica.url) as r:
        keys = [state_key(prefix, uid) for uid in dataset.user_ids]
        pipe_p, pipe_r = p.pipeline(transaction=False), r.pipeline(transaction=False)
        for key in keys:
            pipe_p.hgetall(key)
            pipe_r.hgetall(key)
        assert pipe_r.execute() == pipe_p.execute()
    assert user.refusals() == []


class _Record:
    """An input record as the consumer hands it over (the worker's RawRecord)."""

    def __init__(self, topic: str, offset: int, key: bytes, value: bytes) -> None:
        self.topic, self.partition, self.offset = topic, 0, offset
        self.key, self.value, self.headers = key, value, []


class _WatchedMetrics(Metrics):
    """The worker's metrics, also telling the test when a WAIT timed out."""

    def __init__(self) -> None:
        super().__init__()
        self.timed_out = asyncio.Event()

    def redis_wait_timeout(self) -> None:
        super().redis_wait_timeout()
        self.timed_out.set()


async def _learned_by_one_batch(settings: Settings, records: list[_Record], pair: Pair | None):
    """Drift points learned from one batch processed by the worker's processor; with
    ``pair``, its replica is paused until the batch's first WAIT has timed out."""
    client = aioredis.Redis.from_url(settings.redis_url)
    producer = kafka_producer(settings, acks="all")
    await producer.start()
    try:
        prefix = state_prefix(settings)
        state = RedisState(client, prefix, min_replicas=1, wait_timeout_ms=TIMEOUT_MS)
        await state.load_scripts()
        assigner = Assigner(settings.model_dir)
        topics = Topics.from_settings(settings)
        processor = BatchProcessor(state, assigner, AiokafkaSender(producer), topics)
        processor.drift = shared_drift(settings, client, prefix)
        processor.metrics = metrics = _WatchedMetrics()
        if pair is None:
            await processor.process(records)
        else:
            os.kill(pair.replica_pid(), signal.SIGSTOP)
            try:
                batch = asyncio.ensure_future(processor.process(records))
                await asyncio.wait_for(metrics.timed_out.wait(), 60)
            finally:
                os.kill(pair.replica_pid(), signal.SIGCONT)
            await asyncio.wait_for(batch, 120)
        assert processor.drift is not None
        return (await processor.drift.store.read(assigner.model)).learned
    finally:
        await producer.stop()
        await client.aclose()


def test_a_wait_timeout_retry_keeps_the_batchs_drift_learning(
    pair: Pair, kafka_bootstrap: str, dataset: Dataset
) -> None:
    def app() -> Settings:
        return app_settings(
            kafka_bootstrap,
            pair.primary.url,
            model_dir=dataset.models_dir,
            drift="river",
            redis_min_replicas=1,
        )

    events = dataset.plan.events[:300]
    unhindered, hindered = app(), app()

    def records(settings: Settings) -> list[_Record]:
        topic = {"users": settings.topic_users, "orders": settings.topic_orders}
        return [_Record(topic[e.kind], i, e.key, e.value) for i, e in enumerate(events)]

    expected = asyncio.run(_learned_by_one_batch(unhindered, records(unhindered), None))
    assert expected > 0, "the batch teaches drift nothing: the test proves nothing"
    # The first apply is made on the primary, its WAIT times out, the retry finds the events
    # fenced: the batch must still learn from every fresh user, once.
    assert asyncio.run(_learned_by_one_batch(hindered, records(hindered), pair)) == expected


def test_a_drift_update_returns_only_once_the_replica_has_it(pair: Pair, dataset: Dataset) -> None:
    """An epoch published on a primary is on its replica before any batch names it: on a
    cluster the drift hash is on another primary than the batch's users, whose WAIT does not
    cover it, and a promoted replica without it would publish that number again."""

    async def update() -> None:
        client = aioredis.Redis.from_url(pair.primary.url)
        try:
            state = RedisState(client, PREFIX, min_replicas=1, wait_timeout_ms=TIMEOUT_MS)
            settings = load_settings(drift="river", redis_min_replicas=1)
            drift = shared_drift(settings, client, PREFIX, replicated=state.wait_for_replicas)
            assert drift is not None
            model = dataset.model
            await drift.store.update(model, model.centers * 0, 1, 1.0, "writer", 1)
        finally:
            await client.aclose()

    with paused(pair), pytest.raises(ReplicaWaitTimeout, match="drift update"):
        asyncio.run(update())
    asyncio.run(update())  # acknowledged once the replica is back (a retry: applied once)
