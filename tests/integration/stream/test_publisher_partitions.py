"""The publisher follows an output topic's partition count when partitions are added.

A real broker: a topic of 2 partitions, one publish, 2 partitions added; once the producer's
metadata has the 4 (aiokafka refreshes it every ``metadata_max_age_ms``), records go to Kafka's
default partition of their key among 4, as ``send(key=...)`` puts them, not among the 2 the
publisher saw first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from segstream.settings import Settings
from segstream.stream.clients.kafka import producer as kafka_producer
from segstream.stream.domain.topics import Output
from segstream.stream.kafka.publisher import AiokafkaSender, default_partition
from segstream.stream.kafka.topics import read_all
from tests.waiting import async_wait_until

METADATA_AGE_MS = 200
"""The producer's metadata refresh interval here: short, so the test sees new partitions."""


async def _publish_around_a_partition_increase(settings: Settings, topic: str) -> None:
    producer = kafka_producer(settings, metadata_max_age_ms=METADATA_AGE_MS, acks="all")
    await producer.start()
    try:
        sender = AiokafkaSender(producer)
        await sender.publish([Output(topic, b"before", b"0")])
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            await admin.create_partitions({topic: NewPartitions(total_count=4)})
        finally:
            await admin.close()

        async def four() -> bool:
            return len(await producer.partitions_for(topic)) == 4

        await async_wait_until(four, 60, "the producer never saw 4 partitions", interval_s=0.05)
        await sender.publish([Output(topic, str(uid).encode(), b"1") for uid in range(64)])
    finally:
        await producer.stop()


def test_records_go_to_the_partitions_the_topic_has_now(
    make_topic: Callable[..., str], kafka_bootstrap: str
) -> None:
    topic = make_topic(partitions=2)
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap)
    asyncio.run(_publish_around_a_partition_increase(settings, topic))
    after = [r for r in asyncio.run(read_all(settings, topic)) if r.value == b"1"]
    assert len(after) == 64
    assert {r.partition for r in after} == {0, 1, 2, 3}
    for record in after:
        assert record.partition == default_partition(record.key, 4), record.key
