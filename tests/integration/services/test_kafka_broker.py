"""The local broker is a real Apache Kafka 4.x that keeps keyed messages per partition."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from segstream.services.stack import Stack

N_MESSAGES = 10_000


def test_broker_log_names_apache_kafka_4(stack: Stack) -> None:
    log = stack.kafka.server_log.read_text()
    match = re.search(r"Kafka version: (\d+)\.(\d+)\.(\d+)", log)
    assert match is not None, "the broker log does not name its version"
    assert int(match.group(1)) == 4


def test_topic_is_created_with_the_requested_partitions(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=4)

    async def partitions() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            (description,) = await admin.describe_topics([topic])
            return len(description["partitions"])
        finally:
            await admin.close()

    assert asyncio.run(partitions()) == 4


def test_every_keyed_message_comes_back_through_a_consumer_group(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=4)
    sent = {f"key-{i % 500}".encode(): [] for i in range(500)}  # type: dict[bytes, list[bytes]]

    async def round_trip() -> dict[bytes, list[bytes]]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        await producer.start()
        try:
            batch = []
            for i in range(N_MESSAGES):
                key = f"key-{i % 500}".encode()
                value = f"{i}".encode()
                sent[key].append(value)
                batch.append(await producer.send(topic, value, key=key))
            await asyncio.gather(*batch)
        finally:
            await producer.stop()

        received: dict[bytes, list[bytes]] = defaultdict(list)
        partition_of: dict[bytes, set[int]] = defaultdict(set)
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"group-{topic}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            count = 0
            while count < N_MESSAGES:
                batches = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                for tp, records in batches.items():
                    for record in records:
                        received[record.key].append(record.value)
                        partition_of[record.key].add(tp.partition)
                        count += 1
            await consumer.commit()
            assert len(consumer.assignment()) == 4
        finally:
            await consumer.stop()
        # A key always lands on one partition, which is what keeps one user's events in order.
        assert all(len(parts) == 1 for parts in partition_of.values())
        assert len({p for parts in partition_of.values() for p in parts}) == 4
        return received

    received = asyncio.run(round_trip())
    assert sum(len(v) for v in received.values()) == N_MESSAGES
    # Per key, order is kept.
    assert received == sent
