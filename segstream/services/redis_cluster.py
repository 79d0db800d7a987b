"""A local Redis Cluster: three primaries and three replicas of the machine's ``redis-server``.

Each node is a :class:`~segstream.services.redis.RedisServer` with cluster mode on, in its own
folder ``<data_dir>/redis-cluster/node-<port>/`` (append-only file and ``nodes.conf`` there).
Client ports are ``SEGSTREAM_REDIS_PORT`` and the five above it (6379-6384 by default), so the
default ``SEGSTREAM_REDIS_URL`` reaches the first node, a seed from which a cluster client
discovers the others; each node's cluster bus listens 10,000 above its client port (Redis's
own convention, set explicitly with ``cluster-port``).

``start`` launches the six nodes, joins them once with ``redis-cli --cluster create
--cluster-replicas 1`` (a restart finds them joined by their ``nodes.conf``), and returns when
every node says ``cluster_state:ok`` and every primary has its replica in sync.
:meth:`RedisCluster.kill_primary` crashes one primary and waits for its replica's promotion.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

from segstream.errors import ConfigError, ServiceError
from segstream.services.redis import RedisServer
from segstream.settings import Settings, StackSettings

__all__ = ["ClusterNode", "Failover", "NodeRole", "RedisCluster"]

PRIMARIES = 3
"""Primaries of the local cluster; each has one replica."""
BUS_OFFSET = 10_000
"""A node's cluster bus port is its client port plus this (Redis's default)."""
NODE_TIMEOUT_MS = 2_000
"""``cluster-node-timeout``: how long a primary may be unreachable before its replica takes
over. Redis's default is 15 s; 2 s keeps failover tests short, and on loopback nothing is
slow enough to be taken for a failure."""


class ClusterNode(RedisServer):
    """One node of the local cluster: a RedisServer with cluster mode on, on its own ports."""

    port_settings = (
        "another SEGSTREAM_REDIS_PORT (the cluster uses it and the five ports above, and "
        f"each of those plus {BUS_OFFSET:,} for its cluster bus)"
    )

    def __init__(
        self, settings: Settings, stack: StackSettings, root: Path, port: int, bus_port: int
    ) -> None:
        # The node is the plain server with its own port and folder; the rest is RedisServer's.
        # Its readiness check talks to this one node (not joined yet: no cluster client),
        # whatever SEGSTREAM_REDIS_CLUSTER says for the product's clients.
        super().__init__(
            settings.model_copy(update={"data_dir": root, "redis_cluster": False}),
            stack.model_copy(update={"redis_port": port}),
        )
        self.port = port
        self.bus_port = bus_port

    def ports(self) -> tuple[int, ...]:
        """The client port and the cluster bus port."""
        return (self.port, self.bus_port)

    def _write_config(self) -> None:
        super()._write_config()
        with self.config_file.open("a") as config:
            config.write(
                "cluster-enabled yes\n"
                "cluster-config-file nodes.conf\n"
                f"cluster-port {self.bus_port}\n"
                f"cluster-node-timeout {NODE_TIMEOUT_MS}\n"
            )

    def info(self, section: str) -> dict[str, str]:
        """``CLUSTER INFO`` (``section="cluster"``) or ``INFO <section>``, values as text.

        Raises:
            redis.RedisError: the node does not answer.
        """
        with redis.Redis(port=self.port, socket_timeout=2.0, decode_responses=True) as client:
            if section != "cluster":
                return {k: str(v) for k, v in client.info(section).items()}
            # As two words redis-py leaves the reply unparsed: "field:value" lines.
            raw = str(client.execute_command("CLUSTER", "INFO"))
        return dict(line.split(":", 1) for line in raw.splitlines() if ":" in line)


@dataclass(frozen=True)
class NodeRole:
    """What one node is doing: its port, pid (None when stopped) and role."""

    port: int
    pid: int | None
    role: str
    """``primary``, ``replica``, or ``down`` when it does not answer."""


@dataclass(frozen=True)
class Failover:
    """A primary killed and the replica that took its slots over."""

    killed: int
    """Client port of the primary that was killed."""
    promoted: int
    """Client port of its former replica, now a primary."""
    seconds: float
    """From the kill to ``cluster_state:ok`` on every live node with the replica promoted."""


class RedisCluster:
    """Six ``redis-server`` nodes on loopback joined as one Redis Cluster; see the module."""

    name = "redis-cluster"

    def __init__(
        self,
        settings: Settings,
        stack: StackSettings,
        ports: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        """Nodes on ``ports`` (client, bus) pairs, or on SEGSTREAM_REDIS_PORT + 0..5.

        Raises:
            ConfigError: ``ports`` is not six distinct pairs.
        """
        self.settings = settings
        self.stack = stack
        self.home = settings.data_dir.resolve() / self.name
        if ports is None:
            base = stack.redis_port
            ports = [(base + i, base + i + BUS_OFFSET) for i in range(2 * PRIMARIES)]
        flat = [p for pair in ports for p in pair]
        if len(ports) != 2 * PRIMARIES or len(set(flat)) != len(flat):
            raise ConfigError(f"a local Redis Cluster needs 6 distinct port pairs, got {ports}")
        self.nodes = [ClusterNode(settings, stack, self.home / f"node-{p}", p, b) for p, b in ports]

    @property
    def url(self) -> str:
        """The seed URL: the first node (a cluster client finds the rest from it)."""
        return self.nodes[0].url

    @property
    def seeds(self) -> list[str]:
        """``host:port`` of every node, for clients that take several startup nodes."""
        return [f"127.0.0.1:{node.port}" for node in self.nodes]

    def node(self, port: int) -> ClusterNode:
        """The node on client port ``port``."""
        return next(n for n in self.nodes if n.port == port)

    def is_running(self) -> bool:
        """True when any node of ours runs."""
        return any(node.process.is_running() for node in self.nodes)

    def start(self, timeout_s: float = 60.0) -> bool:
        """Start the nodes that are not running, join them once, wait for a healthy cluster.

        Returns True when this call started a node. A node that fails to start stops the ones
        this call started.

        Raises:
            ConfigError: a port passes 65535 (SEGSTREAM_REDIS_PORT too high).
            ServiceError: a port is taken, redis-server or redis-cli is missing, the join
                failed, or the cluster was not healthy within ``timeout_s`` (with the reason).
        """
        highest = max(node.bus_port for node in self.nodes)
        if highest > 65535:
            raise ConfigError(
                f"SEGSTREAM_REDIS_PORT={self.nodes[0].port} leaves no room for the cluster's "
                f"bus ports (up to {highest}); choose one below {65535 - BUS_OFFSET - 5}"
            )
        started: list[ClusterNode] = []
        try:
            for node in self.nodes:
                if node.start():
                    started.append(node)
            if all(self._fresh(node) for node in self.nodes):
                self._create()
            self.wait_healthy(timeout_s)
        except BaseException:
            for node in started:
                node.stop()
            raise
        return bool(started)

    def stop(self) -> bool:
        """Stop every node we started; True when one was running."""
        return any([node.stop() for node in self.nodes])

    def status(self) -> list[NodeRole]:
        """Each node's pid and role, as the nodes themselves report it."""
        roles = []
        for node in self.nodes:
            pid = node.process.pid()
            role = "down"
            if pid is not None:
                with contextlib.suppress(redis.RedisError):
                    role = _role(node.info("replication"))
            roles.append(NodeRole(node.port, pid, role))
        return roles

    def primaries(self) -> list[int]:
        """Client ports of the live primaries."""
        return [r.port for r in self.status() if r.role == "primary"]

    def kill_primary(self, port: int | None = None, timeout_s: float = 30.0) -> Failover:
        """SIGKILL a primary (``port``, or the first live one) and wait for its replica's promotion.

        The killed node stays down; ``node(port).start()`` brings it back, as a replica.

        Raises:
            ServiceError: ``port`` is no live primary, it has no replica in sync, or the
                replica was not promoted with the cluster healthy within ``timeout_s``.
        """
        primaries = self.primaries()
        port = primaries[0] if port is None and primaries else port
        if port is None or port not in primaries:
            raise ServiceError(f"no live primary on port {port}; primaries are {primaries}")
        replicas = [
            n for n in self.nodes if n.port != port and _replica_of(n, port) and n.process.pid()
        ]
        if not replicas:
            raise ServiceError(f"the primary on port {port} has no replica in sync to promote")
        replica = replicas[0]

        def promoted() -> str | None:
            if _role(replica.info("replication")) != "primary":
                return f"the replica on port {replica.port} is not promoted"
            return self._healthy()

        started = time.monotonic()
        self.node(port).process.kill()
        problem = _wait(promoted, timeout_s)
        if problem is not None:
            raise ServiceError(
                f"{problem} {timeout_s:.0f} s after the primary on port {port} was killed; "
                f"the replica's log ends:\n{replica.process.log_tail()}"
            )
        return Failover(port, replica.port, time.monotonic() - started)

    def wait_healthy(self, timeout_s: float) -> None:
        """Block until every running node says ``cluster_state:ok`` and has its partner in sync.

        Raises:
            ServiceError: not so within ``timeout_s``, naming what was still wrong.
        """
        problem = _wait(self._healthy, timeout_s)
        if problem is not None:
            raise ServiceError(
                f"the Redis Cluster in {self.home} was not healthy within {timeout_s:.0f} s: "
                f"{problem}. If its nodes were joined into another cluster, run `segstream "
                f"services down` and remove {self.home}"
            )

    def _healthy(self) -> str | None:
        """None when the cluster is healthy, else what is wrong (first found)."""
        live = [n for n in self.nodes if n.process.is_running()]
        in_sync = 0
        for node in live:
            try:
                cluster = node.info("cluster")
                replication = node.info("replication")
            except redis.RedisError as exc:
                return f"node {node.port} does not answer ({exc})"
            if cluster.get("cluster_state") != "ok":
                return f"node {node.port} says cluster_state:{cluster.get('cluster_state')}"
            if _role(replication) == "replica":
                if replication.get("master_link_status") != "up":
                    return f"replica {node.port} is not in sync with its primary yet"
                in_sync += 1
        primaries = len(live) - in_sync
        if in_sync < min(PRIMARIES, len(live) - PRIMARIES):
            return f"{in_sync} replica(s) in sync for {primaries} primaries"
        return None

    def _fresh(self, node: ClusterNode) -> bool:
        """True when the node knows no other node and serves no slot (never joined)."""
        info = node.info("cluster")
        return info.get("cluster_known_nodes") == "1" and info.get("cluster_slots_assigned") == "0"

    def _create(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise ServiceError("redis-cli not found: apt-get install redis-tools")
        argv = [cli, "--cluster", "create", *self.seeds, "--cluster-replicas", "1"]
        result = subprocess.run(
            [*argv, "--cluster-yes"], capture_output=True, text=True, check=False, timeout=120
        )
        if result.returncode != 0:
            raise ServiceError(
                f"redis-cli --cluster create failed:\n{result.stdout[-3000:]}{result.stderr}"
            )


def _wait(problem: Callable[[], str | None], timeout_s: float) -> str | None:
    """Poll ``problem()`` until it says None (returned) or ``timeout_s`` passed (its last say).

    A node that does not answer is a problem, named by redis-py's error.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = problem()
        except redis.RedisError as exc:
            found = f"a node does not answer ({exc})"
        if found is None or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _role(replication: dict[str, str]) -> str:
    return "primary" if replication.get("role") == "master" else "replica"


def _replica_of(node: ClusterNode, primary_port: int) -> bool:
    try:
        info = node.info("replication")
    except redis.RedisError:
        return False
    return (
        info.get("role") == "slave"
        and info.get("master_port") == str(primary_port)
        and info.get("master_link_status") == "up"
    )
