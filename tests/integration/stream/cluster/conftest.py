"""A Redis Cluster (3 primaries + 3 replicas) and three KRaft brokers, once per session.

Started and stopped by the product's own ``Stack.up(kafka_brokers=3, redis_cluster=True)``
(``segstream services up --kafka-brokers 3 --redis-cluster``) on free ports of their own, so
the cluster tests never touch the session's single-node stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from segstream.errors import ServiceError
from segstream.services.kafka_cluster import KafkaCluster
from segstream.services.redis_cluster import BUS_OFFSET, RedisCluster
from segstream.services.stack import Stack
from segstream.settings import Settings, load_settings, load_stack_settings
from tests.integration.stream.conftest import app_settings
from tests.ports import KAFKA_CLUSTER_FLOOR, REDIS_CLUSTER_FLOOR, free_port_block


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

    def worker_settings(self, models_dir: Path, data_dir: Path, partitions: int) -> Settings:
        """A worker's settings on both clusters: every broker, the Redis Cluster (one replica
        acknowledging each write), ``partitions`` per topic, batches of 500."""
        settings = app_settings(
            self.bootstrap,
            self.redis.url,
            model_dir=models_dir,
            data_dir=data_dir,
            redis_cluster=True,
            topic_partitions=partitions,
            batch_size=500,
        )
        assert settings.min_replicas == 1
        return settings


ATTEMPTS = 3


def _stack(root: Path) -> Stack:
    kafka_base = free_port_block(6, lowest=KAFKA_CLUSTER_FLOOR)  # client + controller, 3 nodes
    redis_base = free_port_block(6, offset=BUS_OFFSET, lowest=REDIS_CLUSTER_FLOOR)
    return Stack(
        load_settings(
            data_dir=root,
            kafka_bootstrap_servers=f"127.0.0.1:{kafka_base}",
            redis_url=f"redis://127.0.0.1:{redis_base}/0",
            redis_cluster=True,
        ),
        load_stack_settings(kafka_port=kafka_base, redis_port=redis_base),
    )


@pytest.fixture(scope="session")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clusters]:
    for attempt in range(1, ATTEMPTS + 1):
        stack = _stack(tmp_path_factory.mktemp("clusters"))
        try:
            stack.up(kafka_brokers=3, redis_cluster=True)
            break
        except ServiceError as exc:
            stack.down()
            # Another session's test took a port of the block since it was found free.
            if "in use" not in str(exc) or attempt == ATTEMPTS:
                raise
    try:
        kafka = stack.kafka_cluster()
        assert kafka is not None
        yield Clusters(stack.settings, kafka, RedisCluster(stack.settings, stack.stack))
    finally:
        stack.down()
