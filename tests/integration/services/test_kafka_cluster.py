"""The local three-broker Kafka: one KRaft quorum, replicated topics, a broker lost and back."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from segstream.services.kafka_cluster import KafkaCluster
from segstream.services.stack import Stack
from segstream.settings import load_settings, load_stack_settings
from segstream.stream.domain.partitioning import misplacement
from segstream.stream.domain.replication import replication_factor
from tests.ports import free_port, free_port_block
from tests.waiting import wait_until

PARTITIONS = 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``services up --kafka-brokers 3`` for the module (and one Redis), then ``down``."""
    base = free_port_block(6)
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("kafka-cluster"),
        kafka_bootstrap_servers=f"127.0.0.1:{base}",
    )
    services = Stack(settings, load_stack_settings(kafka_port=base, redis_port=free_port()))
    services.up(kafka_brokers=3)
    try:
        yield services
    finally:
        stopped = services.down()
        assert stopped["kafka-cluster"] and stopped["redis"]
        assert not stopped["kafka"]  # the single broker never ran


@pytest.fixture(scope="module")
def cluster(stack: Stack) -> KafkaCluster:
    found = stack.kafka_cluster()
    assert found is not None
    return found


@pytest.fixture(scope="module")
def topic(cluster: KafkaCluster) -> str:
    """A topic created as ensure_topics will: replication_factor(settings, brokers)."""
    name = f"replicated-{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
        await admin.start()
        try:
            copies = replication_factor(cluster.settings, len(cluster.nodes))
            await admin.create_topics([NewTopic(name, PARTITIONS, copies)])
        finally:
            await admin.close()

    asyncio.run(create())
    assert wait_in_sync(cluster, name, 3)
    return name


def describe(cluster: KafkaCluster, topic: str) -> dict[int, dict]:
    """Partition -> its metadata (leader, replicas, isr) as the cluster reports it now."""

    async def run() -> dict[int, dict]:
        admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
        await admin.start()
        try:
            (description,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return {int(p["partition"]): p for p in description.get("partitions", [])}

    return asyncio.run(run())


def wait_in_sync(cluster: KafkaCluster, topic: str, replicas: int, timeout_s: float = 60) -> bool:
    """True once every partition of ``topic`` has ``replicas`` in-sync replicas; False when
    that has not happened within ``timeout_s``."""

    def in_sync() -> bool:
        partitions = describe(cluster, topic)
        return len(partitions) == PARTITIONS and all(
            len(p["isr"]) == replicas for p in partitions.values()
        )

    try:
        return wait_until(in_sync, timeout_s, "", interval_s=0.5)
    except AssertionError:
        return False


def test_three_brokers_of_apache_kafka_4_form_one_cluster(
    stack: Stack, cluster: KafkaCluster
) -> None:
    names = [s.name for s in stack.status() if s.name.startswith("kafka")]
    assert names == ["kafka-1", "kafka-2", "kafka-3"]
    assert all(s.pid for s in stack.status())
    for node in cluster.nodes.values():
        assert "Kafka version: 4." in node.server_log.read_text()
    cluster.wait_brokers(3, timeout_s=10)


def test_a_topic_gets_three_replicas_and_two_must_acknowledge_by_default(
    cluster: KafkaCluster, topic: str
) -> None:
    for partition in describe(cluster, topic).values():
        assert sorted(partition["replicas"]) == [1, 2, 3]

    async def min_isr() -> str:
        admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
        await admin.start()
        try:
            (response,) = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})]
            )
        finally:
            await admin.close()
        ((_, _, _, _, entries),) = response.resources
        return str(entries[0][1])

    assert asyncio.run(min_isr()) == "2"


def test_kafkas_default_placement_is_the_one_expected_and_crc32_is_told_apart(
    cluster: KafkaCluster, topic: str
) -> None:
    """kcat (librdkafka, not aiokafka) places keys; the pure check judges every record."""
    keys = [str(uid) for uid in range(200)]

    def produce(*options: str) -> None:
        lines = "".join(
            f"{key}:{tag}\n" for key in keys for tag in [options[-1] if options else "crc"]
        )
        subprocess.run(
            ["kcat", "-b", cluster.bootstrap, "-P", "-t", topic, "-K:", *options],
            input=lines, text=True, check=True, timeout=60,
        )  # fmt: skip

    produce()  # librdkafka's default: consistent_random, i.e. CRC32
    produce("-X", "partitioner=murmur2_random")
    causes: dict[str, list[str | None]] = {"crc": [], "partitioner=murmur2_random": []}
    for record in consume_all(cluster, topic):
        if record.value.decode() in causes:
            pattern = misplacement(topic, record.key, record.partition, PARTITIONS)
            causes[record.value.decode()].append(pattern and pattern.cause)
    assert causes["partitioner=murmur2_random"] == [None] * len(keys)
    assert len(causes["crc"]) == len(keys)
    assert set(causes["crc"]) == {None, "crc32"}  # a third of the keys agree by chance


def test_with_a_broker_killed_acks_all_writes_go_on_and_it_catches_up_on_restart(
    cluster: KafkaCluster, topic: str
) -> None:
    leader = int(describe(cluster, topic)[0]["leader"])
    cluster.kill(leader)
    try:
        assert not cluster.nodes[leader].process.is_running()
        sent = [f"after-kill-{i}".encode() for i in range(300)]

        async def produce() -> None:
            producer = AIOKafkaProducer(
                bootstrap_servers=cluster.bootstrap, acks="all", enable_idempotence=True
            )
            await producer.start()
            try:
                futures = [await producer.send(topic, v, key=v) for v in sent]
                await asyncio.wait_for(asyncio.gather(*futures), 90)
            finally:
                await producer.stop()

        asyncio.run(produce())
        partitions = describe(cluster, topic)
        assert all(leader not in p["isr"] for p in partitions.values())
        assert all(len(p["isr"]) == 2 for p in partitions.values())
        received = [r.value for r in consume_all(cluster, topic) if r.value.startswith(b"after")]
        assert sorted(received) == sorted(sent)
    finally:
        cluster.restart(leader)
    assert wait_in_sync(cluster, topic, 3)


def consume_all(cluster: KafkaCluster, topic: str) -> list:
    """Every record of ``topic`` up to its end offsets now (no consumer group)."""

    async def run() -> list:
        consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            records = []
            while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
                for batch in (await consumer.getmany(timeout_ms=1000)).values():
                    records.extend(batch)
            return records
        finally:
            await consumer.stop()

    return asyncio.run(run())
