"""Private stacks for tests: settings on free ports, a stack that is always stopped, and a
local Redis Cluster on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from segstream.services.redis_cluster import RedisCluster
from segstream.services.stack import Stack
from segstream.settings import Settings, load_settings
from tests.ports import free_port, free_ports


def private_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings of a broker and a Redis under ``data_dir`` on free ports (not started);
    ``overrides`` win (e.g. ``app_id``)."""
    kafka_port, controller_port, redis_port = free_port(), free_port(), free_port()
    values: dict[str, object] = {
        "data_dir": data_dir,
        "kafka_port": kafka_port,
        "kafka_controller_port": controller_port,
        "redis_port": redis_port,
        "kafka_bootstrap_servers": f"127.0.0.1:{kafka_port}",
        "redis_url": f"redis://127.0.0.1:{redis_port}/0",
    }
    return load_settings(**{**values, **overrides})


@contextmanager
def running(stack: Stack) -> Iterator[Stack]:
    """``stack`` started, and stopped on the way out whatever happened."""
    stack.up()
    try:
        yield stack
    finally:
        stack.down()


@contextmanager
def redis_cluster(data_dir: Path) -> Iterator[RedisCluster]:
    """Six real nodes (3 primaries, 3 replicas) on free ports under ``data_dir``, started, and
    stopped on the way out whatever happened."""
    ports = free_ports(12)
    nodes = RedisCluster(
        load_settings(data_dir=data_dir), ports=list(zip(ports[:6], ports[6:], strict=True))
    )
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()
        assert not nodes.is_running()
