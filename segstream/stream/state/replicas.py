"""How many replicas each Redis primary has, and which primaries are written degraded.

A primary with fewer replicas connected than ``SEGSTREAM_REDIS_MIN_REPLICAS`` (its replica
crashed, or it is a replica just promoted in a failover) cannot acknowledge a ``WAIT`` for
that many, however long the worker waits or however often it restarts. Instead of stalling
every batch that touches it, the worker keeps writing to it **degraded**: its ``WAIT`` asks for
the replicas it has (none: no ``WAIT``), and :class:`ReplicaShortfall` says so loudly (one
WARNING per change, a gauge per primary, ``/readyz`` not ready naming the primary and the
setting) until enough replicas are connected again. A replica that is connected but late
is not a shortfall: its ``WAIT`` times out and the step is retried, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from segstream.stream.domain.observer import WorkerObserver

__all__ = [
    "RECHECK_S",
    "STANDALONE",
    "ReplicaShortfall",
    "connected_replicas",
    "online_replicas",
    "replicas_of",
]

log = logging.getLogger(__name__)

STANDALONE: Final = "the Redis server"
"""How a standalone server is named where a cluster names a primary by ``host:port``."""
RECHECK_S: Final = 5.0
"""How often a degraded primary's replicas are counted again, in seconds (one ``INFO
replication`` each time): how long it may take for writes to wait again once a replica is back."""


def online_replicas(info: Any) -> int:
    """Replicas in sync (``state=online``) in a parsed ``INFO replication``.

    A replica still loading its first full copy is connected but cannot acknowledge a
    ``WAIT`` before it is done: counting it would turn a degraded primary back into one
    whose every step times out until the copy is over.
    """
    fields = cast(dict[str, Any], info)
    return sum(
        1
        for name, value in fields.items()
        if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )


async def replicas_of(client: aioredis.Redis, node: ClusterNode | None = None) -> int:
    """Replicas connected and in sync now to ``node`` of a cluster client, or to a standalone
    server.

    Raises:
        redis.RedisError: the primary does not answer.
    """
    if node is None:
        return online_replicas(await client.info("replication"))
    nodes = cast(AsyncRedisCluster, client)
    return online_replicas(await nodes.execute_command("INFO", "replication", target_nodes=node))


async def connected_replicas(client: aioredis.Redis, cluster: bool) -> dict[str, int]:
    """Each primary's address -> its replicas connected and in sync now.

    A standalone server is one primary (:data:`STANDALONE`); on a Redis Cluster
    (``cluster``) every primary the client's slot map knows is asked.

    Raises:
        redis.RedisError: a primary does not answer.
    """
    if not cluster:
        return {STANDALONE: await replicas_of(client)}
    nodes = cast(AsyncRedisCluster, client)
    await nodes.initialize()
    return {node.name: await replicas_of(client, node) for node in nodes.get_primaries()}


class ReplicaShortfall:
    """The primaries written degraded: fewer replicas connected than ``required``.

    Fed by :meth:`record` with counts read from the primaries; read by the write path
    (:meth:`replicas_to_wait_for`, :meth:`due`) and by ``/readyz`` (:meth:`reasons`).
    Not thread-safe; the event loop's only.
    """

    def __init__(
        self,
        required: int,
        *,
        observer: WorkerObserver | None = None,
        recheck_s: float = RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``required``: ``SEGSTREAM_REDIS_MIN_REPLICAS`` in effect; ``observer`` is told of
        every change (``redis_degraded(primary, degraded)``)."""
        self.required = required
        self.observer = observer
        self.recheck_s = recheck_s
        self.clock = clock
        self._short: dict[str, tuple[int, float]] = {}
        """Degraded primary -> (replicas connected, monotonic time they were counted)."""

    def replicas_to_wait_for(self, primary: str) -> int:
        """How many replicas a ``WAIT`` on ``primary`` asks for: ``required``, or the replicas
        a degraded primary has (0: send no ``WAIT``)."""
        short = self._short.get(primary)
        return self.required if short is None else short[0]

    def degraded(self) -> dict[str, int]:
        """Degraded primary -> its replicas connected when last counted."""
        return {primary: connected for primary, (connected, _) in self._short.items()}

    def due(self) -> list[str]:
        """Degraded primaries last counted :attr:`recheck_s` ago or more."""
        now = self.clock()
        return [p for p, (_, at) in self._short.items() if now - at >= self.recheck_s]

    def record(self, primary: str, connected: int) -> bool:
        """``primary`` has ``connected`` replicas now; True when that is short (degraded).

        Logs one WARNING when the primary turns degraded or healthy again, nothing otherwise.
        """
        if connected < self.required:
            if primary not in self._short:
                log.warning(
                    "Redis primary %s has %d replica(s) connected, fewer than "
                    "SEGSTREAM_REDIS_MIN_REPLICAS=%d: its writes are acknowledged without "
                    "waiting for them (degraded: a crash of that primary now can lose them) "
                    "until a replica is back; start its replica, or lower the setting",
                    primary,
                    connected,
                    self.required,
                )
                self._notify(primary, True)
            self._short[primary] = (connected, self.clock())
            return True
        if self._short.pop(primary, None) is not None:
            log.warning(
                "Redis primary %s has %d replica(s) connected again: its writes wait for "
                "SEGSTREAM_REDIS_MIN_REPLICAS=%d again",
                primary,
                connected,
                self.required,
            )
            self._notify(primary, False)
        return False

    def accepts(self, primary: str, acked: int, connected: int) -> bool:
        """Whether a write step whose ``WAIT`` on ``primary`` came back short (``acked``
        replicas, fewer than asked) stands, ``connected`` being its replicas counted just after.

        The count is recorded (:meth:`record`). True when the primary is degraded and every
        replica it has acknowledged (none: at once): the step is written degraded. False when
        it has the replicas required and one is late: the step is to be retried.
        """
        return self.record(primary, connected) and acked >= connected

    def keep_only(self, primaries: Iterable[str]) -> None:
        """Forget degraded nodes that are no longer primaries (a failover moved their slots)."""
        alive = set(primaries)
        for primary in [p for p in self._short if p not in alive]:
            del self._short[primary]
            log.warning("Redis node %s is no longer a primary; it is not written", primary)
            self._notify(primary, False)

    def reasons(self) -> list[str]:
        """One line per degraded primary, naming it and the setting; empty when none is."""
        return [
            f"Redis primary {primary} has {connected} of the {self.required} replica(s) "
            f"SEGSTREAM_REDIS_MIN_REPLICAS asks for: its writes are acknowledged without them "
            "(start its replica, or lower SEGSTREAM_REDIS_MIN_REPLICAS)"
            for primary, connected in sorted(self.degraded().items())
        ]

    def _notify(self, primary: str, degraded: bool) -> None:
        if self.observer is not None:
            self.observer.redis_degraded(primary, degraded)
