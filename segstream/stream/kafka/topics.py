"""Creating the stream's topics, before any producer or consumer touches them.

:func:`read_all` reads a whole topic, as it is now, for checks and benchmarks.

Creating them up front (instead of letting the broker auto-create them on first use) gives the
input topics the configured partition count, the same for both, which their co-partitioning
needs, and ``user-segments`` its ``cleanup.policy=compact``. It also lets a worker's first
group join see its topics at once rather than after a metadata refresh.
"""

from __future__ import annotations

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from segstream.errors import ServiceError
from segstream.settings import Settings
from segstream.stream.clients.kafka import admin_client
from segstream.stream.clients.kafka import consumer as kafka_consumer
from segstream.stream.clients.retry import KAFKA_TRANSIENT, retry

__all__ = ["ensure_topics", "partitions_of", "read_all", "topic_specs"]


def topic_specs(settings: Settings) -> dict[str, dict[str, str]]:
    """Every topic the stream uses -> its topic configuration."""
    return {
        settings.topic_users: {},
        settings.topic_orders: {},
        settings.topic_segment_changes: {},
        settings.topic_user_segments: {"cleanup.policy": "compact"},
        settings.topic_dead_letters: {},
    }


async def ensure_topics(
    settings: Settings,
    attempts: int | None = 5,
    *,
    give_up_after_s: float | None = None,
    first_delay_s: float = 0.5,
    max_delay_s: float = 5.0,
) -> list[str]:
    """Create the stream's missing topics with ``settings.topic_partitions``; returns the new.

    Existing topics are left as they are (their partition count is not changed). The broker
    is retried (see :func:`~segstream.stream.clients.retry.retry`) up to ``attempts`` tries
    and ``give_up_after_s`` seconds, whichever comes first (``None``: no such limit).

    Raises:
        ServiceError: the broker cannot be reached in time, or refuses for good.
    """

    async def create() -> list[str]:
        admin = admin_client(settings)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            wanted = [
                NewTopic(name, settings.topic_partitions, 1, topic_configs=config)
                for name, config in topic_specs(settings).items()
                if name not in existing
            ]
            if not wanted:
                return []
            response = await admin.create_topics(wanted)
            for name, code, *_ in response.topic_errors:
                # 36: TOPIC_ALREADY_EXISTS, another process created it between list and create.
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise ServiceError(f"the broker refused to create topic {name}: error {code}")
            return [topic.name for topic in wanted]
        finally:
            await admin.close()

    return await retry(
        create,
        what=f"waiting for Kafka at {settings.kafka_bootstrap_servers} to create topics",
        transient=KAFKA_TRANSIENT,
        attempts=attempts,
        give_up_after_s=give_up_after_s,
        first_delay_s=first_delay_s,
        max_delay_s=max_delay_s,
        hint=(
            "start the broker, check SEGSTREAM_KAFKA_BOOTSTRAP_SERVERS, or raise "
            "SEGSTREAM_STARTUP_TIMEOUT_S"
        ),
    )


async def partitions_of(settings: Settings, topic: str) -> list[int]:
    """The partition numbers of ``topic`` (empty when it does not exist)."""
    admin = admin_client(settings)
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(int(p["partition"]) for p in description.get("partitions", []))


async def read_all(settings: Settings, topic: str) -> list[ConsumerRecord]:
    """Every record of ``topic`` up to its end offsets at the call, partition by partition.

    Records of one partition are in offset order; partitions follow each other in number
    order. Reads without a consumer group (nothing is committed).
    """
    partitions = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
    if not partitions:
        return []
    consumer = kafka_consumer(settings, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        by_partition: dict[int, list[ConsumerRecord]] = {tp.partition: [] for tp in partitions}
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=1_000)
            for tp, records in fetched.items():
                by_partition[tp.partition].extend(r for r in records if r.offset < ends[tp])
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return [record for p in sorted(by_partition) for record in by_partition[p]]
