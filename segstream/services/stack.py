"""The local stack as one unit: Kafka and Redis (and, for change data capture, PostgreSQL and
Kafka Connect with Debezium) started, checked and stopped together."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TypeVar

from segstream.errors import ServiceError
from segstream.services.connect import ConnectWorker, debezium_version
from segstream.services.kafka import KafkaBroker, kafka_version
from segstream.services.kafka_cluster import KafkaCluster
from segstream.services.postgres import PostgresServer
from segstream.services.prometheus import PrometheusServer
from segstream.services.redis import RedisServer
from segstream.services.redis_cluster import RedisCluster
from segstream.settings import Settings, StackSettings

_Single = TypeVar("_Single", KafkaBroker, RedisServer)
_Nodes = TypeVar("_Nodes", KafkaCluster, RedisCluster)

__all__ = ["ServiceStatus", "Stack"]


@dataclass(frozen=True)
class ServiceStatus:
    """What one service is doing: its name, address, pid (None when stopped)."""

    name: str
    address: str
    pid: int | None
    detail: str = ""


class Stack:
    """Kafka + Redis for ``settings`` on the ports of ``stack``; every method is safe to call
    in any state.

    ``secure``: SASL_SSL Kafka and TLS-only Redis with an ACL user (``services up --secure``);
    :attr:`client` is then the settings a client of the stack needs.
    """

    def __init__(self, settings: Settings, stack: StackSettings, *, secure: bool = False) -> None:
        self.settings = settings
        self.stack = stack
        self.secure = secure
        self.kafka = KafkaBroker(settings, stack, secure=secure)
        self.redis = RedisServer(settings, stack, secure=secure)
        self.postgres = PostgresServer(settings, stack)
        self.connect = ConnectWorker(settings, stack)

    def cdc_used(self) -> bool:
        """Whether the change-data-capture services were ever started in this data dir."""
        return self.postgres.home.exists() or self.connect.home.exists()

    @property
    def client(self) -> Settings:
        """``settings`` as a client of this stack (its servers, credentials and CA)."""
        return self.kafka.client.model_copy(
            update={
                name: getattr(self.redis.client, name)
                for name in ("redis_url", "redis_username", "redis_password", "redis_ssl_cafile")
            }
        )

    def up(
        self, *, kafka_brokers: int = 1, redis_cluster: bool = False, cdc: bool = False
    ) -> dict[str, float | None]:
        """Start whatever is not running; return seconds each start took (None: was running).

        ``cdc`` also starts PostgreSQL and then Kafka Connect with Debezium (after Kafka,
        whose topics Connect keeps its state in); not with a secured stack or a cluster.

        ``kafka_brokers`` > 1 starts a local Kafka cluster instead of the single broker,
        ``redis_cluster`` a local Redis Cluster instead of the single server (on the same
        first ports, see :mod:`~segstream.services.kafka_cluster` and
        :mod:`~segstream.services.redis_cluster`). A cluster's nodes report one timing each.

        If Kafka fails to start, a Redis this call started is stopped again, so a failed
        ``up`` leaves nothing behind.

        Raises:
            ServiceError: the other kind (single or cluster) of a service runs already, or
                a cluster is asked of a secured stack (not supported).
        """
        if self.secure and (kafka_brokers > 1 or redis_cluster):
            raise ServiceError(
                "--secure runs one broker and one Redis server: it does not combine with "
                "--kafka-brokers or --redis-cluster"
            )
        if cdc and (self.secure or kafka_brokers > 1 or redis_cluster):
            raise ServiceError(
                "--cdc runs beside one plaintext broker and one Redis server: it does not "
                "combine with --secure, --kafka-brokers or --redis-cluster"
            )
        redis = self._pick(
            "redis", redis_cluster, self.redis, RedisCluster(self.settings, self.stack)
        )
        kafka: KafkaBroker | KafkaCluster = self.kafka
        if kafka_brokers > 1 or self.kafka_cluster() is not None:
            cluster = KafkaCluster(
                self.settings, self.stack, kafka_brokers if kafka_brokers > 1 else None
            )
            kafka = self._pick("kafka", kafka_brokers > 1, self.kafka, cluster)
        timings: dict[str, float | None] = {}
        t0 = time.monotonic()
        started_redis = redis.start()
        timings["redis"] = time.monotonic() - t0 if started_redis else None
        t0 = time.monotonic()
        try:
            started_kafka = kafka.start()
        except BaseException:
            if started_redis:
                redis.stop()
            raise
        timings["kafka"] = time.monotonic() - t0 if started_kafka else None
        if cdc:
            for server in (self.postgres, self.connect):  # Connect needs Kafka only
                t0 = time.monotonic()
                timings[server.name] = time.monotonic() - t0 if server.start() else None
        for status in self.status():  # a cluster's nodes are listed by node
            for service in ("redis", "kafka"):
                if status.name.startswith(f"{service}-"):
                    timings[status.name] = timings[service]
        return timings

    @staticmethod
    def _pick(
        service: str,
        cluster: bool,
        single: _Single,
        nodes: _Nodes,
    ) -> _Single | _Nodes:
        """The single server or the cluster, refusing when the other one runs."""
        if single.process.is_running() if cluster else nodes.is_running():
            wanted, runs = ("a cluster", "a single server") if cluster else ("one", "a cluster")
            raise ServiceError(
                f"the local {service} runs as {runs} already, so it cannot start as {wanted}: "
                "run `segstream services down` first"
            )
        return nodes if cluster else single

    def kafka_cluster(self) -> KafkaCluster | None:
        """The local Kafka cluster made under the data dir, or None (see ``up``)."""
        return KafkaCluster.existing(self.settings, self.stack)

    def down(self) -> dict[str, bool]:
        """Stop what we started, cluster nodes included; True per service that was running.

        The clusters are listed only when they exist (a Kafka cluster's saved quorum, a
        Redis Cluster's folder), Prometheus only when ``up --monitoring`` ever ran here.
        """
        # Connect first: its connector's task holds a replication connection to PostgreSQL
        # and writes to Kafka until it stops.
        stopped: dict[str, bool] = {}
        if self.cdc_used():
            stopped.update({"connect": self.connect.stop(), "postgres": self.postgres.stop()})
        stopped.update({"kafka": self.kafka.stop(), "redis": self.redis.stop()})
        kafka_cluster = self.kafka_cluster()
        if kafka_cluster is not None:
            stopped[kafka_cluster.name] = kafka_cluster.stop()
        redis_cluster = RedisCluster(self.settings, self.stack)
        if redis_cluster.home.exists():
            stopped[redis_cluster.name] = redis_cluster.stop()
        prometheus = PrometheusServer(self.settings, self.stack)
        if prometheus.home.exists():  # `up --monitoring` was run on this data dir
            stopped[prometheus.name] = prometheus.stop()
        return stopped

    def status(self) -> list[ServiceStatus]:
        """One line of truth per service (secured or not as its data directory says); one
        per node for a cluster that runs."""
        version = f"Apache Kafka {kafka_version()}"
        secure = self.secure or self.kafka.formatted_secure()
        address = f"SASL_SSL://{self.kafka.bootstrap}" if secure else self.kafka.bootstrap
        kafka = [ServiceStatus("kafka", address, self.kafka.process.pid(), version)]
        cluster = self.kafka_cluster()
        if cluster is not None and cluster.is_running():
            kafka = [
                ServiceStatus(f"kafka-{i}", n.bootstrap, n.process.pid(), f"{version}, node {i}")
                for i, n in cluster.nodes.items()
            ]
        single = RedisServer(self.settings, self.stack, secure=secure)
        redis = [ServiceStatus("redis", single.url, self.redis.process.pid())]
        nodes = RedisCluster(self.settings, self.stack)
        if nodes.is_running():
            redis = [
                ServiceStatus(f"redis-{r.port}", nodes.node(r.port).url, r.pid, f"cluster {r.role}")
                for r in nodes.status()
            ]
        cdc = []
        if self.cdc_used():
            cdc = [
                ServiceStatus(
                    "postgres",
                    f"127.0.0.1:{self.stack.postgres_port}",
                    self.postgres.process.pid(),
                    "PostgreSQL, wal_level=logical",
                ),
                ServiceStatus(
                    "connect",
                    self.connect.url,
                    self.connect.process.pid(),
                    f"Kafka Connect {kafka_version()}, Debezium {debezium_version()}",
                ),
            ]
        # Prometheus is optional (`up --monitoring`): listed while it runs, so that `status`
        # still means "Kafka and Redis run" when it does not.
        prometheus = PrometheusServer(self.settings, self.stack)
        monitoring = []
        if prometheus.process.is_running():
            monitoring = [ServiceStatus("prometheus", prometheus.url, prometheus.process.pid())]
        return kafka + redis + cdc + monitoring
