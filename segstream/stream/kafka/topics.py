"""Creating the stream's topics, before any producer or consumer touches them.

:func:`read_all` reads a whole topic, as it is now, for checks and benchmarks;
:func:`max_message_bytes` reads the largest record batch a topic accepts.

Creating them up front (instead of letting the broker auto-create them on first use) gives the
input topics the configured partition count, the same for both, which their co-partitioning
needs, and ``user-segments`` its ``cleanup.policy=compact``. It also lets a worker's first
group join see its topics at once rather than after a metadata refresh.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    BrokerNotAvailableError,
    InvalidReplicationFactorError,
    KafkaConnectionError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from segstream.errors import ServiceError
from segstream.settings import Settings
from segstream.stream.clients.kafka import admin_client, connection_problem
from segstream.stream.clients.kafka import consumer as kafka_consumer
from segstream.stream.clients.retry import KAFKA_TRANSIENT, retry
from segstream.stream.domain.replication import min_insync_replicas, replication_factor

__all__ = [
    "WAIT_HINT",
    "broker_count",
    "check_created",
    "ensure_topics",
    "max_message_bytes",
    "partitions_of",
    "read_all",
    "topic_specs",
]


WAIT_HINT = (
    "start the broker, check SEGSTREAM_KAFKA_BOOTSTRAP_SERVERS, or raise "
    "SEGSTREAM_STARTUP_TIMEOUT_S"
)
"""What to do when the broker did not answer in time, for a retry's giving-up message."""


@asynccontextmanager
async def _started_admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client, started for the block and closed after it whatever happened.

    Closed even when its start fails or is cancelled: aiokafka's start opens connections and
    a metadata task before its last step (the API version probe), which only ``close`` ends.
    """
    admin = admin_client(settings)
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


def topic_specs(settings: Settings) -> dict[str, dict[str, str]]:
    """Every topic the stream uses -> its topic configuration."""
    return {
        settings.topic_users: {},
        settings.topic_orders: {},
        settings.topic_segment_changes: {},
        settings.topic_user_segments: {"cleanup.policy": "compact"},
        settings.topic_dead_letters: {},
    }


def check_created(name: str, code: int, *, copies: int, brokers: int) -> None:
    """Judge the broker's answer ``code`` to creating topic ``name`` with ``copies`` replicas.

    ``brokers`` is how many brokers the cluster's metadata listed just before.

    Raises:
        BrokerNotAvailableError: the controller refused the replicas although the metadata
            listed enough brokers: some are fenced for a moment (a restart, a resumed pause),
            which heals, so the caller retries.
        ServiceError: any other refusal, which retrying does not mend.
    """
    # 36: TOPIC_ALREADY_EXISTS, another process created it between list and create.
    if code in (0, TopicAlreadyExistsError.errno):
        return
    if code == InvalidReplicationFactorError.errno and copies <= brokers:
        raise BrokerNotAvailableError(
            f"the controller has fewer than {copies} unfenced broker(s) for topic {name} "
            f"although the cluster lists {brokers}"
        )
    raise ServiceError(f"the broker refused to create topic {name}: error {code}")


async def ensure_topics(
    settings: Settings,
    attempts: int | None = 5,
    *,
    give_up_after_s: float | None = None,
    first_delay_s: float = 0.5,
    max_delay_s: float = 5.0,
    specs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """Create the stream's missing topics with ``settings.topic_partitions``; returns the new.

    ``specs`` (topic -> configuration) names other topics to create the same way instead of
    the stream's own (:func:`topic_specs`), e.g. the delivery dead-letter topic.

    Each gets :func:`~segstream.stream.domain.replication.replication_factor` copies (the
    setting, else min(3, brokers)) and ``min.insync.replicas`` one less (at least 1), so with
    ``acks=all`` no acknowledged record is lost with one broker. Existing topics are left as
    they are (their partition count and replicas are not changed). The broker is retried (see
    :func:`~segstream.stream.clients.retry.retry`) up to ``attempts`` tries and
    ``give_up_after_s`` seconds, whichever comes first (``None``: no such limit).

    Raises:
        ServiceError: the broker cannot be reached in time or refuses for good; at once when
            the security settings are wrong (naming the setting to change).
    """

    async def create() -> list[str]:
        admin = admin_client(settings)
        try:
            await admin.start()
        except KafkaConnectionError as exc:
            await admin.close()
            # Refused credentials or TLS trust never heal: say which setting, at once.
            problem = await connection_problem(settings)
            if problem is not None:
                raise ServiceError(problem) from exc
            raise
        try:
            existing = set(await admin.list_topics())
            brokers = await _live_brokers(admin)
            copies = replication_factor(settings, brokers)
            insync = {"min.insync.replicas": str(min_insync_replicas(copies))}
            wanted = [
                NewTopic(
                    name, settings.topic_partitions, copies, topic_configs=insync | dict(config)
                )
                for name, config in (topic_specs(settings) if specs is None else specs).items()
                if name not in existing
            ]
            if not wanted:
                return []
            response = await admin.create_topics(wanted)
            for name, code, *_ in response.topic_errors:
                check_created(name, code, copies=copies, brokers=brokers)
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
        hint=WAIT_HINT,
    )


def _config_value(response: Any, name: str) -> tuple[int, str | None]:
    """(error code, value of config ``name`` or None) of a one-resource DescribeConfigs reply."""
    ((error_code, _, _, _, entries),) = response.resources
    values = {entry[0]: entry[1] for entry in entries}
    return error_code, values.get(name)


async def max_message_bytes(settings: Settings, topic: str, attempts: int = 5) -> int:
    """The largest record batch, in bytes, the broker accepts on ``topic``.

    That is the topic's ``max.message.bytes`` (its own, or the cluster default the broker
    reports for it), or, when the topic does not exist yet, the broker's
    ``message.max.bytes`` (which a new topic inherits). Read once through the admin client.

    Raises:
        ServiceError: the broker cannot be reached or does not report either value, after
            ``attempts`` tries.
    """

    async def read() -> int:
        async with _started_admin(settings) as admin:
            wanted = {"max.message.bytes": None}
            (response,) = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, wanted)]
            )
            code, value = _config_value(response, "max.message.bytes")
            source = f"topic {topic}'s max.message.bytes"
            if code == UnknownTopicOrPartitionError.errno:
                broker = (await admin.describe_cluster())["brokers"][0]["node_id"]
                wanted = {"message.max.bytes": None}
                (response,) = await admin.describe_configs(
                    [ConfigResource(ConfigResourceType.BROKER, str(broker), wanted)]
                )
                code, value = _config_value(response, "message.max.bytes")
                source = f"broker {broker}'s message.max.bytes"
        if code != 0 or value is None or not value.isdigit():
            raise ServiceError(f"the broker did not report {source}: error {code}, {value!r}")
        return int(value)

    return await retry(
        read,
        what=f"reading the size limit of {topic} on {settings.kafka_bootstrap_servers}",
        transient=KAFKA_TRANSIENT,
        attempts=attempts,
        first_delay_s=0.5,
    )


async def partitions_of(settings: Settings, topic: str) -> list[int]:
    """The partition numbers of ``topic`` (empty when it does not exist).

    Raises:
        KafkaError: the broker cannot be reached (the admin client is closed all the same).
    """
    async with _started_admin(settings) as admin:
        (description,) = await admin.describe_topics([topic])
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


async def _live_brokers(admin: AIOKafkaAdminClient) -> int:
    """How many brokers the cluster describes, at least 1.

    Raises:
        BrokerNotAvailableError: it describes none: every broker fenced for a moment (a
            restart, a resumed pause), a broker failure to retry, not a configuration error.
    """
    brokers = len((await admin.describe_cluster())["brokers"])
    if brokers == 0:
        raise BrokerNotAvailableError("the cluster lists no live broker")
    return brokers


async def broker_count(settings: Settings) -> int:
    """How many brokers the cluster describes, at least 1 (one metadata round trip).

    Raises:
        BrokerNotAvailableError: it describes none for the moment (see :func:`_live_brokers`).
        aiokafka's errors: the broker cannot be reached.
    """
    async with _started_admin(settings) as admin:
        return await _live_brokers(admin)
