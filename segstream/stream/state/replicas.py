"""How many replicas each Redis primary has, as the primaries report it (``INFO replication``)."""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

__all__ = ["connected_replicas"]


async def connected_replicas(client: aioredis.Redis, cluster: bool) -> dict[str, int]:
    """Each primary's address -> its replicas connected now (``connected_slaves``).

    A standalone server is one primary; on a Redis Cluster (``cluster``) every primary the
    client's slot map knows is asked.

    Raises:
        redis.RedisError: a primary does not answer.
    """
    if not cluster:
        info = await client.info("replication")
        return {"the Redis server": int(info.get("connected_slaves", 0))}
    nodes = cast(AsyncRedisCluster, client)
    await nodes.initialize()
    counts: dict[str, int] = {}
    for node in nodes.get_primaries():
        info = await nodes.execute_command("INFO", "replication", target_nodes=node)
        counts[node.name] = int(info.get("connected_slaves", 0))
    return counts
