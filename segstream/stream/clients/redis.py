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

__all__ = ["redis_client", "sync_redis_client"]


def redis_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """An asyncio client of ``settings.redis_url`` (connects on first use)."""
    return aioredis.Redis.from_url(settings.redis_url, **options)


def sync_redis_client(settings: Settings, **options: Any) -> redis.Redis:
    """A blocking client of ``settings.redis_url``, for command-line tools and benchmarks."""
    return redis.Redis.from_url(settings.redis_url, **options)
