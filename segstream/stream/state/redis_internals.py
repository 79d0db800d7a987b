"""The only pieces of redis-py's asyncio cluster client that are not its documented API.

:class:`~segstream.stream.state.store.RedisState` sends each primary's share of a batch in one
pipeline on one of that node's connections, never redirected (its module docstring says why),
and the population reads address each primary's slots; redis-py documents neither. They use:

- ``RedisCluster.nodes_manager``: ``get_node_from_slot(slot)`` (the slot map's primary),
  ``get_node(node_name=...)`` and ``initialize()`` (re-read the slot map);
- ``ClusterNode.execute_pipeline(commands)`` with ``PipelineCommand(position, *args)``,
  whose ``result`` holds each reply or the exception in its place.

Everything else reaches them through this module and nowhere else. If redis-py renames or
reshapes them, :func:`check_redis_internals` refuses to start (a
:class:`~segstream.errors.ConfigError` naming the installed redis-py version and what is
gone) rather than a cluster client failing with an ``AttributeError`` mid-batch; the unit test
``tests/unit/stream/state/test_redis_internals.py`` fails first.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from redis.asyncio.cluster import ClusterNode, NodesManager, PipelineCommand
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from segstream.errors import ConfigError

__all__ = [
    "check_redis_internals",
    "execute_on_node",
    "node_for_slot",
    "node_named",
    "queued_command",
    "refresh_slot_map",
    "reply_of",
]


def _parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def _problems() -> list[str]:
    """What of the attributes this module uses the installed redis-py lacks."""
    problems = []
    if "nodes_manager" not in inspect.getsource(AsyncRedisCluster.__init__):
        problems.append("RedisCluster.nodes_manager is gone")
    for name, first in (("get_node_from_slot", "slot"), ("get_node", "host"), ("initialize", "")):
        method = getattr(NodesManager, name, None)
        if method is None:
            problems.append(f"NodesManager.{name} is gone")
        elif first and _parameters(method)[1:2] != [first]:
            problems.append(f"NodesManager.{name}({', '.join(_parameters(method))}) changed")
    execute = getattr(ClusterNode, "execute_pipeline", None)
    if execute is None or not inspect.iscoroutinefunction(execute):
        problems.append("ClusterNode.execute_pipeline is gone or no longer a coroutine")
    elif _parameters(execute) != ["self", "commands"]:
        problems.append(f"ClusterNode.execute_pipeline({', '.join(_parameters(execute))}) changed")
    command = PipelineCommand(0, "PING")
    if getattr(command, "args", None) != ("PING",) or not hasattr(command, "result"):
        problems.append("PipelineCommand(position, *args) no longer keeps .args and .result")
    return problems


@functools.cache
def check_redis_internals() -> None:
    """Refuse to run on a redis-py whose cluster client lacks what this module uses.

    Checked once per process (cached); called by every Redis Cluster user of it.

    Raises:
        ConfigError: names the installed redis-py version and each attribute gone or changed.
    """
    problems = _problems()
    if problems:
        version = metadata.version("redis")
        raise ConfigError(
            f"redis-py {version} is not supported on a Redis Cluster "
            f"(SEGSTREAM_REDIS_CLUSTER=true): {'; '.join(problems)}. segstream is written "
            "against redis-py 8.2 (pyproject.toml): install it, or port "
            "segstream/stream/state/redis_internals.py"
        )


def node_for_slot(client: AsyncRedisCluster, slot: int) -> ClusterNode:
    """The primary of hash slot ``slot`` in ``client``'s slot map (no round trip)."""
    return client.nodes_manager.get_node_from_slot(slot)


def node_named(client: AsyncRedisCluster, name: str) -> ClusterNode | None:
    """The node ``host:port`` of ``client``'s slot map, or None."""
    return client.nodes_manager.get_node(node_name=name)


async def refresh_slot_map(client: AsyncRedisCluster) -> None:
    """Re-read the cluster's slot map (after a failover or a resharding).

    Raises:
        redis.RedisError: no node answered.
    """
    await client.nodes_manager.initialize()


def queued_command(position: int, *args: Any) -> PipelineCommand:
    """One command of a node pipeline; ``position`` is the caller's own index."""
    return PipelineCommand(position, *args)


def reply_of(command: PipelineCommand) -> Any:
    """A sent command's reply, or the exception the server answered it with."""
    return command.result


async def execute_on_node(node: ClusterNode, commands: Sequence[PipelineCommand]) -> None:
    """Send ``commands`` to ``node`` in one pipeline on one of its connections, unredirected;
    each reply (or error) lands in its command (:func:`reply_of`).

    Raises:
        redis.RedisError, OSError: the connection failed.
    """
    await node.execute_pipeline(list(commands))
