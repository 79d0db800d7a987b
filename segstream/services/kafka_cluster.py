"""A local Kafka of several brokers: KRaft nodes with combined roles and one quorum of voters.

Each node is a :class:`~segstream.services.kafka.KafkaBroker` (same jars, JVM and readiness
check) with a node id, its own ports and folder ``<data_dir>/kafka-cluster/node-<id>/``, and
every node a voter of one controller quorum. The quorum is the dynamic one Kafka 4.1 documents
(KIP-853): each node finds it through ``controller.quorum.bootstrap.servers`` and its storage
is formatted once with the same ``--initial-controllers id@host:port:directory-id,...`` and
cluster id, kept in ``<data_dir>/kafka-cluster/quorum.json`` so a restarted node rejoins.

Node ``i`` (0-based) listens for clients on ``SEGSTREAM_KAFKA_PORT + 2i`` and for the quorum
on ``SEGSTREAM_KAFKA_CONTROLLER_PORT + 2i`` (that setting defaults to the client port + 1):
9092/9093, 9094/9095, 9096/9097 by default, so the default bootstrap servers reach node 1.

Replication: internal topics and topics created without a factor get
``default_replication_factor(brokers)`` copies and ``min.insync.replicas`` one less, so a
producer with ``acks=all`` keeps writing while one broker is down and loses nothing
acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from segstream.errors import ConfigError, ServiceError
from segstream.services.kafka import KafkaBroker, _cluster_id
from segstream.settings import Settings, StackSettings
from segstream.stream.domain.replication import default_replication_factor, min_insync_replicas

__all__ = ["BrokerNode", "KafkaCluster", "Quorum"]

BROKER_SESSION_TIMEOUT_MS = 6_000
"""How long the controller waits for a silent broker before fencing it and moving its
partitions' leadership (Kafka's default is 9 s); shorter for quick failover locally."""


@dataclass(frozen=True)
class Quorum:
    """What every node of one cluster shares: its id and the voters (id -> ports, directory)."""

    cluster_id: str
    ports: dict[int, tuple[int, int]]
    """Node id -> (client port, controller port)."""
    directories: dict[int, str]
    """Node id -> the directory id its metadata log is formatted with."""

    @property
    def bootstrap_controllers(self) -> str:
        """``controller.quorum.bootstrap.servers``: every voter's controller address."""
        return ",".join(f"127.0.0.1:{c}" for _, c in self.ports.values())

    @property
    def initial_controllers(self) -> str:
        """StorageTool's ``--initial-controllers``: ``id@host:port:directory-id`` per voter."""
        return ",".join(
            f"{node}@127.0.0.1:{c}:{self.directories[node]}" for node, (_, c) in self.ports.items()
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"cluster_id": self.cluster_id, "ports": self.ports, "directories": self.directories}
        path.write_text(json.dumps(doc, indent=1))

    @classmethod
    def load(cls, path: Path) -> Quorum:
        """The quorum saved at ``path``.

        Raises:
            ConfigError: the file is unreadable (it was edited or truncated).
        """
        try:
            doc = json.loads(path.read_text())
            return cls(
                cluster_id=str(doc["cluster_id"]),
                ports={int(k): (int(v[0]), int(v[1])) for k, v in doc["ports"].items()},
                directories={int(k): str(v) for k, v in doc["directories"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise ConfigError(
                f"{path} is unreadable ({exc}); remove {path.parent} (the local cluster's "
                "data) and start it again"
            ) from exc


class BrokerNode(KafkaBroker):
    """One combined broker + controller of a :class:`Quorum`."""

    port_settings = (
        "other ports with SEGSTREAM_KAFKA_PORT / SEGSTREAM_KAFKA_CONTROLLER_PORT (a cluster "
        "of n brokers uses each plus 0, 2, ..., 2(n-1))"
    )
    stop_timeout_s = 15.0
    """SIGKILL after this: a node stopped together with the rest of its quorum can wait for
    ever in its controlled shutdown, which needs a majority that has just left (seen: 60 s,
    then the lone broker's 60 s bound). A clean stop takes 1-3 s; a killed node recovers its
    logs at the next start."""

    def __init__(
        self, settings: Settings, stack: StackSettings, root: Path, node_id: int, quorum: Quorum
    ) -> None:
        port, controller = quorum.ports[node_id]
        super().__init__(
            settings.model_copy(update={"data_dir": root}),
            stack.model_copy(update={"kafka_port": port, "kafka_controller_port": controller}),
        )
        self.node_id = node_id
        self.quorum = quorum

    def _properties(self) -> dict[str, str]:
        props = super()._properties()
        copies = default_replication_factor(len(self.quorum.ports))
        min_isr = str(min_insync_replicas(copies))
        props.update(
            {
                "node.id": str(self.node_id),
                "controller.quorum.bootstrap.servers": self.quorum.bootstrap_controllers,
                "default.replication.factor": str(copies),
                "min.insync.replicas": min_isr,
                "offsets.topic.replication.factor": str(copies),
                "transaction.state.log.replication.factor": str(copies),
                "transaction.state.log.min.isr": min_isr,
                "share.coordinator.state.topic.replication.factor": str(copies),
                "share.coordinator.state.topic.min.isr": min_isr,
                "broker.session.timeout.ms": str(BROKER_SESSION_TIMEOUT_MS),
                "broker.heartbeat.interval.ms": "1000",
            }
        )
        return props

    def _format_options(self) -> list[str]:
        return [
            f"--cluster-id={self.quorum.cluster_id}",
            f"--initial-controllers={self.quorum.initial_controllers}",
        ]


class KafkaCluster:
    """``brokers`` combined KRaft nodes on loopback forming one cluster; see the module."""

    name = "kafka-cluster"

    def __init__(
        self,
        settings: Settings,
        stack: StackSettings,
        brokers: int | None = None,
        ports: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        """The cluster saved under ``data_dir``, or a new one of ``brokers`` nodes (3).

        Args:
            ports: (client, controller) port per node; by default derived from the settings
                (see the module). Ignored when the cluster exists: its nodes keep their ports.

        Raises:
            ConfigError: fewer than 3 brokers (a quorum that survives one loss needs 3),
                clashing ports, an unreadable ``quorum.json``, or a saved cluster of another
                size than ``brokers``.
        """
        self.settings = settings
        self.stack = stack
        self.home = settings.data_dir.resolve() / self.name
        saved = self.home / "quorum.json"
        if saved.exists():
            self.quorum = Quorum.load(saved)
            if brokers is not None and brokers != len(self.quorum.ports):
                raise ConfigError(
                    f"the local Kafka cluster in {self.home} has {len(self.quorum.ports)} "
                    f"brokers, not {brokers}; stop it and remove that folder to make another"
                )
        else:
            brokers = 3 if brokers is None else brokers
            if brokers < 3:
                raise ConfigError(
                    f"a local Kafka cluster has at least 3 brokers, got {brokers}; one broker "
                    "is `segstream services up` without --kafka-brokers"
                )
            if ports is None:
                ports = [
                    (stack.kafka_port + 2 * i, stack.controller_port + 2 * i)
                    for i in range(brokers)
                ]
            flat = [p for pair in ports for p in pair]
            if len(ports) != brokers or len(set(flat)) != len(flat) or max(flat) > 65535:
                raise ConfigError(
                    f"{brokers} brokers need {brokers} distinct (client, controller) port "
                    f"pairs below 65536, got {list(ports)}; choose other SEGSTREAM_KAFKA_PORT / "
                    "SEGSTREAM_KAFKA_CONTROLLER_PORT"
                )
            ids = range(1, brokers + 1)
            self.quorum = Quorum(
                cluster_id=_cluster_id(),
                ports=dict(zip(ids, ports, strict=True)),
                directories={node: _cluster_id() for node in ids},
            )
        self.nodes = {
            node: BrokerNode(settings, stack, self.home / f"node-{node}", node, self.quorum)
            for node in self.quorum.ports
        }

    @classmethod
    def existing(cls, settings: Settings, stack: StackSettings) -> KafkaCluster | None:
        """The cluster saved under ``settings.data_dir``, or None when none was created."""
        home = settings.data_dir.resolve() / cls.name
        return cls(settings, stack) if (home / "quorum.json").exists() else None

    @property
    def bootstrap(self) -> str:
        """Every node's ``host:port``, comma-separated (SEGSTREAM_KAFKA_BOOTSTRAP_SERVERS)."""
        return ",".join(node.bootstrap for node in self.nodes.values())

    def is_running(self) -> bool:
        """True when any node of ours runs."""
        return any(node.process.is_running() for node in self.nodes.values())

    def start(self, timeout_s: float = 180.0) -> bool:
        """Start every node not running and wait until all brokers are registered.

        The nodes start together (no node is ready before a majority of voters runs). A node
        that failed stops the ones this call started. Returns True when a node was started.

        Raises:
            ServiceError: Java or the jars are missing, a port is taken, a node died, or the
                cluster did not list every broker within ``timeout_s``.
        """
        self.quorum.save(self.home / "quorum.json")
        nodes = list(self.nodes.values())
        with ThreadPoolExecutor(len(nodes)) as pool:
            futures = [pool.submit(node.start, timeout_s) for node in nodes]
            outcomes = [f.exception() or f.result() for f in futures]
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            for node, outcome in zip(nodes, outcomes, strict=True):
                if outcome is True:
                    node.stop()
            raise failures[0]
        self.wait_brokers(len(nodes), timeout_s)
        return any(outcomes)

    def stop(self) -> bool:
        """Stop every node we started (together: a lone survivor would wait for a quorum)."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            return any(list(pool.map(lambda node: node.stop(), self.nodes.values())))

    def kill(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would; ``restart`` brings it back."""
        self.nodes[node_id].process.kill()

    def restart(self, node_id: int, timeout_s: float = 120.0) -> None:
        """Start a stopped or killed node again and wait until every broker is registered.

        Raises:
            ServiceError: as :meth:`start`.
        """
        self.nodes[node_id].start(timeout_s)
        self.wait_brokers(len(self.nodes), timeout_s)

    def wait_brokers(self, count: int, timeout_s: float) -> None:
        """Block until the cluster's metadata lists ``count`` brokers.

        Raises:
            ServiceError: not within ``timeout_s``, with how many it listed.
        """
        seen = asyncio.run(_wait_brokers(self.bootstrap, count, timeout_s))
        if seen != count:
            raise ServiceError(
                f"the Kafka cluster at {self.bootstrap} listed {seen} of {count} brokers after "
                f"{timeout_s:.0f} s; see the logs under {self.home}"
            )


async def _wait_brokers(bootstrap: str, count: int, timeout_s: float) -> int:
    """How many brokers the metadata listed last, returning as soon as it is ``count``."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    seen = 0
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            seen = len((await admin.describe_cluster()).get("brokers", ()))
            if seen == count:
                return seen
        except (KafkaError, OSError):
            pass
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    return seen
