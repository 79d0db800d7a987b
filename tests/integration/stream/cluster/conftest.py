"""A Redis Cluster (3 primaries + 3 replicas) and three KRaft brokers, once per session.

Started and stopped by the product's own ``Stack.up(kafka_brokers=3, redis_cluster=True)``
(``segstream services up --kafka-brokers 3 --redis-cluster``) on free ports of their own, so
the cluster tests never touch the session's single-node stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from segstream.services.kafka_cluster import KafkaCluster
from segstream.services.redis_cluster import BUS_OFFSET, RedisCluster
from segstream.services.stack import Stack
from segstream.settings import Settings, load_settings
from tests.ports import free_port_block


@dataclass(frozen=True)
class Clusters:
    """The running clusters and the settings that reach them."""

    settings: Settings
    kafka: KafkaCluster
    redis: RedisCluster

    @property
    def bootstrap(self) -> str:
        """Every broker, so clients survive any one of them down."""
        return self.kafka.bootstrap


@pytest.fixture(scope="session")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clusters]:
    kafka_base = free_port_block(6)  # client and controller port of each of 3 nodes
    redis_base = free_port_block(6, offset=BUS_OFFSET, lowest=40_000)
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("clusters"),
        kafka_port=kafka_base,
        redis_port=redis_base,
        kafka_bootstrap_servers=f"127.0.0.1:{kafka_base}",
        redis_url=f"redis://127.0.0.1:{redis_base}/0",
        redis_cluster=True,
    )
    stack = Stack(settings)
    try:
        stack.up(kafka_brokers=3, redis_cluster=True)
        kafka = stack.kafka_cluster()
        assert kafka is not None
        yield Clusters(settings, kafka, RedisCluster(settings))
    finally:
        stack.down()
