"""Dropping an app's namespace takes its topics and Redis keys, and nothing of another app's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from segstream.settings import Settings
from segstream.stream.kafka.topics import ensure_topics, topic_specs
from segstream.stream.lifecycle.namespace import drop_namespace, leader_topic
from segstream.stream.state.keys import state_prefix
from tests.integration.stream.conftest import app_settings
from tests.waiting import wait_until


def _app(kafka_bootstrap: str, redis_url: str) -> Settings:
    return app_settings(kafka_bootstrap, redis_url, app_prefix="ns", topic_partitions=2)


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def _wait_for_topics(bootstrap: str, done: Callable[[set[str]], bool]) -> None:
    """Block until the broker's topic list satisfies ``done`` (metadata changes take a moment)."""
    seen: list[set[str]] = []

    def settled() -> bool:
        seen.append(asyncio.run(_topics(bootstrap)))
        return done(seen[-1])

    wait_until(settled, 30, lambda: f"the broker's topics stay {sorted(seen[-1])}", interval_s=0.2)


async def _commit(bootstrap: str, group: str, topic: str) -> None:
    """Publish three records to partition 0 of ``topic`` and commit ``group`` past them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, b"x", key=f"{i}".encode(), partition=0)
    finally:
        await producer.stop()
    partition = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        consumer.assign([partition])
        await consumer.commit({partition: OffsetAndMetadata(3, "")})
    finally:
        await consumer.stop()


async def _committed(bootstrap: str, group: str, topic: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


def _fill(client: redis.Redis, prefix: str, n: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.hset(f"{prefix}{{u:{i}}}", mapping={"n": i})
    pipe.execute()


def test_dropping_a_namespace_deletes_its_topics_and_keys_and_spares_another_app(
    kafka_bootstrap: str,
    redis_url: str,
    make_topic: Callable[..., str],
) -> None:
    app = _app(kafka_bootstrap, redis_url)
    other = _app(kafka_bootstrap, redis_url)
    leader = make_topic(leader_topic(app.app_id), partitions=1)
    sink = make_topic()
    client = redis.Redis.from_url(redis_url)
    try:
        # More keys than one SCAN page / UNLINK call holds.
        _fill(client, state_prefix(app), 25_000)
        _fill(client, state_prefix(other), 10)

        dropped = drop_namespace(app, [app.app_id], [sink, "no-such-topic"])

        assert set(dropped) == {*topic_specs(app), leader, sink}
        assert list(client.scan_iter(match=state_prefix(app) + "*", count=10_000)) == []
        # SCAN may return a key twice while Redis shrinks its table after the deletions.
        assert len(set(client.scan_iter(match=state_prefix(other) + "*"))) == 10
    finally:
        client.close()
    _wait_for_topics(kafka_bootstrap, lambda topics: not topics & set(dropped))
    assert set(topic_specs(other)) <= asyncio.run(_topics(kafka_bootstrap))


def test_a_group_of_a_dropped_namespace_starts_again_from_the_beginning(
    kafka_bootstrap: str, redis_url: str
) -> None:
    app = _app(kafka_bootstrap, redis_url)
    asyncio.run(_commit(kafka_bootstrap, app.app_id, app.topic_users))
    assert asyncio.run(_committed(kafka_bootstrap, app.app_id, app.topic_users)) == {
        TopicPartition(app.topic_users, 0): 3
    }

    dropped = set(drop_namespace(app, [app.app_id]))

    # The demo re-creates its topics right after dropping them: the group keeps no offset.
    _wait_for_topics(kafka_bootstrap, lambda topics: not topics & dropped)
    asyncio.run(ensure_topics(app))
    assert asyncio.run(_committed(kafka_bootstrap, app.app_id, app.topic_users)) == {}
