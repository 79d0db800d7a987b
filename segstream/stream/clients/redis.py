"""Building the Redis clients segstream uses, from :class:`~segstream.settings.Settings`.

Every Redis client of the product (worker, API, reassign, drift, populations, namespace drop,
benchmarks) is built here, so connection options are set in one place. Keyword arguments are
passed on to redis-py (timeouts, for one).
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

from segstream.settings import Settings

__all__ = ["redis_client", "sync_redis_client", "worker_redis_client"]


def redis_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """An asyncio client of ``settings.redis_url`` (connects on first use)."""
    return aioredis.Redis.from_url(settings.redis_url, **options)


def worker_redis_client(settings: Settings) -> aioredis.Redis:
    """The worker's asyncio client: every read, write and connect attempt is bounded.

    ``SEGSTREAM_REDIS_SOCKET_TIMEOUT_S`` and ``SEGSTREAM_REDIS_CONNECT_TIMEOUT_S`` turn a
    half-open connection (a server gone without closing it) into a TimeoutError, which the
    worker retries like any other outage; TCP keepalive finds such a connection while idle.
    """
    return redis_client(
        settings,
        socket_timeout=settings.redis_socket_timeout_s,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        socket_keepalive=True,
    )


def sync_redis_client(settings: Settings, **options: Any) -> redis.Redis:
    """A blocking client of ``settings.redis_url``, for command-line tools and benchmarks."""
    return redis.Redis.from_url(settings.redis_url, **options)
