"""redis-py's undocumented cluster internals, reached only through one adapter, and the
start-up check that refuses a redis-py which changed them, naming its version."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.asyncio.cluster import ClusterNode, NodesManager
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from segstream.errors import ConfigError
from segstream.stream.state.redis_internals import check_redis_internals
from segstream.stream.state.store import RedisState


@pytest.fixture(autouse=True)
def fresh_check() -> Iterator[None]:
    """The check is cached per process: forget it around each test."""
    check_redis_internals.cache_clear()
    yield
    check_redis_internals.cache_clear()


def test_the_installed_redis_py_has_what_the_adapter_uses() -> None:
    check_redis_internals()


def test_a_redis_py_without_the_slot_lookup_is_refused_naming_version_and_attribute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(NodesManager, "get_node_from_slot")
    with pytest.raises(
        ConfigError, match=r"redis-py \d\S* .*NodesManager\.get_node_from_slot is gone"
    ):
        check_redis_internals()


def test_a_redis_py_whose_node_pipeline_changed_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def execute_pipeline(self: ClusterNode, commands: list, retries: int) -> bool: ...

    monkeypatch.setattr(ClusterNode, "execute_pipeline", execute_pipeline)
    with pytest.raises(
        ConfigError, match=r"ClusterNode\.execute_pipeline\(self, commands, retries\) changed"
    ):
        check_redis_internals()


def test_the_state_store_refuses_a_cluster_client_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(NodesManager, "initialize")
    client = AsyncRedisCluster(host="127.0.0.1", port=1)  # never connected
    with pytest.raises(ConfigError, match=r"NodesManager\.initialize is gone.*redis_internals"):
        RedisState(client, "app:", cluster=True)
