"""Private stacks for tests: settings on free ports, a stack that is always stopped, a local
Redis Cluster on free ports, and the change-data-capture services (PostgreSQL, Kafka Connect
with Debezium) beside a running broker."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from segstream.errors import ServiceError
from segstream.services.connect import ConnectWorker
from segstream.services.postgres import PostgresServer
from segstream.services.process import LocalServer
from segstream.services.redis_cluster import RedisCluster
from segstream.services.stack import Stack
from segstream.settings import Settings, StackSettings, load_settings, load_stack_settings
from tests.ports import free_port, free_ports
from tests.waiting import wait_until


class Private(NamedTuple):
    """A private stack's settings: the product's (a client of it) and the stack's (its ports);
    ``Stack(*private)`` runs it."""

    settings: Settings
    stack: StackSettings


def private_settings(data_dir: Path, **overrides: object) -> Private:
    """Settings of a broker and a Redis under ``data_dir`` on free ports (not started);
    ``overrides`` win, each going to the class that declares it (``app_id`` to the product's,
    ``prometheus_port`` to the stack's; a name neither declares is a TypeError)."""
    kafka_port, controller_port, redis_port = free_ports(3)
    stack: dict[str, object] = {
        "kafka_port": kafka_port,
        "kafka_controller_port": controller_port,
        "redis_port": redis_port,
    }
    product: dict[str, object] = {
        "data_dir": data_dir,
        "kafka_bootstrap_servers": f"127.0.0.1:{kafka_port}",
        "redis_url": f"redis://127.0.0.1:{redis_port}/0",
    }
    for name, value in overrides.items():
        (stack if name in StackSettings.model_fields else product)[name] = value
    return Private(load_settings(**product), load_stack_settings(**stack))


@contextmanager
def running(stack: Stack) -> Iterator[Stack]:
    """``stack`` started, and stopped on the way out whatever happened."""
    stack.up()
    try:
        yield stack
    finally:
        stack.down()


def start_again(server: LocalServer, timeout_s: float = 60.0) -> None:
    """Start a stopped or killed ``server`` again, once its ports are free.

    A client reconnecting in a loop to a dead loopback port can briefly hold it (a TCP
    self-connect when the kernel picks that same port as the source), so "in use" is retried.
    """

    def started() -> bool:
        try:
            server.start()
        except ServiceError as exc:
            if "already in use" not in str(exc):
                raise
            return False
        return True

    wait_until(started, timeout_s, "the server's port stayed in use", interval_s=0.5)


@contextmanager
def redis_cluster(data_dir: Path) -> Iterator[RedisCluster]:
    """Six real nodes (3 primaries, 3 replicas) on free ports under ``data_dir``, started, and
    stopped on the way out whatever happened."""
    ports = free_ports(12)
    nodes = RedisCluster(
        load_settings(data_dir=data_dir),
        load_stack_settings(),  # unused: the nodes' ports are given
        ports=list(zip(ports[:6], ports[6:], strict=True)),
    )
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()
        assert not nodes.is_running()


@dataclass(frozen=True)
class CdcServices:
    """PostgreSQL and a Kafka Connect worker with Debezium, running beside a test broker.

    ``settings`` is a client of all of them: the broker, ``connect_url``, and
    ``cdc_database_url`` naming the replication role (its password is found in the data dir).
    """

    settings: Settings
    postgres: PostgresServer
    connect: ConnectWorker


@contextmanager
def cdc_services(broker: Settings, stack: StackSettings) -> Iterator[CdcServices]:
    """PostgreSQL and Connect on free ports, a data dir of their own, stopped on the way out.

    The data dir is made world-enterable: run as root, PostgreSQL runs as the ``postgres``
    user, who must reach it (pytest's own temporary folders are private to root).
    """
    root = Path(tempfile.mkdtemp(prefix="segstream-cdc-"))
    os.chmod(root, 0o755)
    settings = broker.model_copy(
        update={
            "data_dir": root,
            # Connect's group and its three topics are named after the app id.
            "app_id": f"cdc-{uuid.uuid4().hex[:8]}",
        }
    )
    ports = stack.model_copy(update={"postgres_port": free_port(), "connect_port": free_port()})
    postgres, connect = PostgresServer(settings, ports), ConnectWorker(settings, ports)
    try:
        postgres.start()
        connect.start()
        client = postgres.cdc_settings().model_copy(update={"connect_url": connect.url})
        yield CdcServices(client, postgres, connect)
    finally:
        connect.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)
