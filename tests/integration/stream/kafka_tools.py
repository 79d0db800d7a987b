"""Reading a consumer group's progress from the broker, for tests that wait on a worker."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from segstream.stream.topics import partitions_of


async def group_lag(bootstrap: str, group: str, topics: Sequence[str]) -> int:
    """Records of ``topics`` the group has not committed yet (all of them before any commit)."""
    partitions = [TopicPartition(t, p) for t in topics for p in await partitions_of(bootstrap, t)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
        await admin.close()
    lag = 0
    for tp in partitions:
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        lag += max(0, ends[tp] - done)
    return lag
