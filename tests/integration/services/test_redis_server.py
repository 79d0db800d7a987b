"""The local Redis is the real server, answering PING and running Lua."""

from __future__ import annotations

import redis


def test_redis_answers_ping_and_runs_lua(redis_client: redis.Redis) -> None:
    assert redis_client.ping() is True
    assert redis_client.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, "n", 41) == 41
    assert redis_client.info("server")["redis_version"]
