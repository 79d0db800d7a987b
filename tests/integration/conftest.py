"""The real stack for integration tests: one Kafka broker and one Redis per test session.

Both run on free ports of their own under a temporary data directory, through the same
``segstream.services`` code that ``segstream services up`` uses, so the suite never collides
with a running demo and exercises the product's own start-up and readiness checks.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from segstream.services.stack import Stack
from segstream.settings import Settings
from tests.integration.stacks import CdcServices, Private, cdc_services, private_settings, running
from tests.waiting import async_wait_until


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def private_stack(tmp_path_factory: pytest.TempPathFactory) -> Private:
    """The session's private stack: the product's settings of a client of it (data dir,
    bootstrap, Redis URL) and the stack's (its free ports)."""
    return private_settings(tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="session")
def stack_settings(private_stack: Private) -> Settings:
    """Settings of a client of the session's private stack (data dir, bootstrap, Redis URL)."""
    return private_stack.settings


@pytest.fixture(scope="session")
def stack(private_stack: Private) -> Iterator[Stack]:
    """Kafka and Redis, started once for the session and stopped at its end."""
    with running(Stack(*private_stack)) as services:
        yield services


@pytest.fixture(scope="session")
def cdc(stack: Stack) -> Iterator[CdcServices]:
    """PostgreSQL (wal_level=logical) and Kafka Connect with Debezium 3.6.1.Final beside the
    session's broker, started once for the session (Connect takes tens of seconds)."""
    with cdc_services(stack.kafka.client, stack.stack) as services:
        yield services


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: Stack) -> str:
    """``host:port`` of the session's Apache Kafka broker."""
    return stack.kafka.bootstrap


@pytest.fixture(scope="session")
def redis_url(stack: Stack) -> str:
    """``redis://`` URL of the session's Redis server."""
    return stack.redis.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on a freshly flushed database."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> Callable[..., str]:
    """Factory: ``make_topic(name=None, partitions=4, **config) -> name`` creates a topic.

    Without a name, a unique one is made up, so tests never see each other's messages. It
    returns once the broker's metadata lists every partition of the topic.
    """

    def create(name: str | None = None, partitions: int = 4, **config: str) -> str:
        topic = name or f"test-{uuid.uuid4().hex[:12]}"
        asyncio.run(_create_topic(kafka_bootstrap, topic, partitions, config))
        return topic

    return create


async def _create_topic(
    bootstrap: str, topic: str, partitions: int, config: dict[str, str]
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1, topic_configs=config)]
        )

        # The broker answers once the controller has the topic; its own metadata can lag a
        # moment behind (longer while it is still deleting other topics).
        async def described() -> bool:
            (description,) = await admin.describe_topics([topic])
            return len(description.get("partitions", [])) == partitions

        await async_wait_until(described, 30, f"{topic} has no metadata", interval_s=0.05)
    finally:
        await admin.close()
