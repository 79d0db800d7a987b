"""Walking a whole keyspace: the one server, or every primary of a Redis Cluster.

``SCAN`` walks one server's keys. On a Redis Cluster each primary holds its own share, so a
walk is one cursor per primary (:func:`primaries`, then :func:`scan_page` per node until its
cursor is back to 0); on a single server the one "node" is ``None`` and the client's own
``SCAN`` is used. Callers page through one node at a time and may retry a page: a cursor stays
valid while its node lives (a primary that fails over mid-walk ends the walk with the
client's connection error; run it again).

The same for redis-py's blocking clients (:func:`sync_primaries`, :func:`sync_scan_page`),
for command-line tools.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.cluster import ClusterNode as SyncClusterNode

from segstream.stream.clients.redis import as_bytes

__all__ = ["is_cluster", "primaries", "scan_page", "sync_primaries", "sync_scan_page"]


def is_cluster(client: aioredis.Redis | redis.Redis) -> bool:
    """Whether ``client`` is a Redis Cluster client (asyncio or blocking)."""
    return isinstance(client, aioredis.RedisCluster | redis.RedisCluster)


async def primaries(client: aioredis.Redis) -> list[ClusterNode | None]:
    """The nodes a walk visits: every primary of a cluster (its slot map learnt first), or
    ``[None]``, the server itself."""
    if not isinstance(client, aioredis.RedisCluster):
        return [None]
    await client.initialize()
    return list(client.get_primaries())


async def scan_page(
    client: aioredis.Redis,
    node: ClusterNode | None,
    cursor: int,
    *,
    match: str,
    count: int,
    type_: str | None = None,
) -> tuple[int, list[bytes]]:
    """One ``SCAN`` page of ``node`` (``None``: the single server): the next cursor (0 at the
    end of that node's keys) and the page's keys."""
    options: dict[str, Any] = {"match": match, "count": count, "_type": type_}
    if node is None:
        next_cursor, keys = await client.scan(cursor, **options)
        return int(next_cursor), [as_bytes(key) for key in keys]
    cursors, keys = await client.scan(cursor, target_nodes=node, **options)
    # redis-py types a cluster's SCAN like one server's; with target_nodes the cursor comes back
    # per node: {node name: cursor}.
    return int(cursors[node.name]), [as_bytes(key) for key in keys]  # type: ignore[index]


def sync_primaries(client: redis.Redis) -> list[SyncClusterNode | None]:
    """:func:`primaries` for a blocking client."""
    if not isinstance(client, redis.RedisCluster):
        return [None]
    return list(client.get_primaries())


def sync_scan_page(
    client: redis.Redis,
    node: SyncClusterNode | None,
    cursor: int,
    *,
    match: str,
    count: int,
    type_: str | None = None,
) -> tuple[int, list[bytes]]:
    """:func:`scan_page` for a blocking client."""
    options: dict[str, Any] = {"match": match, "count": count, "_type": type_}
    if node is None:
        next_cursor, keys = client.scan(cursor, **options)
        return int(next_cursor), [as_bytes(key) for key in keys]
    cursors, keys = client.scan(cursor, target_nodes=node, **options)
    # redis-py types a cluster's SCAN like one server's; with target_nodes the cursor comes back
    # per node: {node name: cursor}.
    return int(cursors[node.name]), [as_bytes(key) for key in keys]  # type: ignore[index]
