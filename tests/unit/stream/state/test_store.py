"""RedisState's rules that need no server: its settings are checked when it is built.

What it sends and decodes is tested as pure functions (test_codec.py, test_keys.py); the Lua
scripts' semantics, the script reload and the replica WAIT run on real Redis servers in
tests/integration/stream (test_state.py, test_replica_wait.py).
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from segstream.stream.state.store import RedisState


@pytest.fixture
def client() -> aioredis.Redis:
    """A client that is never used: building a RedisState opens no connection."""
    return aioredis.Redis(host="127.0.0.1", port=1)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"order_window": 0}, "order_window"),
        ({"min_replicas": -1}, "min_replicas"),
        ({"wait_timeout_ms": 0}, "wait_timeout_ms"),
    ],
)
def test_an_impossible_setting_is_refused_naming_it(
    client: aioredis.Redis, options: dict[str, int], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        RedisState(client, "app:", **options)
