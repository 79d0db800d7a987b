"""Building the Redis clients segstream uses, from :class:`~segstream.settings.Settings`.

Every Redis client of the product (worker, API, reassign, drift, populations, namespace drop,
benchmarks) is built here, so connection options (ACL user and password, TLS) are set in one
place. Keyword arguments are passed on to redis-py (timeouts, for one).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import redis
import redis.asyncio as aioredis

from segstream.settings import Settings

__all__ = ["connection_options", "redis_client", "sync_redis_client"]


def connection_options(settings: Settings) -> dict[str, Any]:
    """The options every Redis client gets besides its URL: credentials and TLS files.

    The settings keep credentials out of ``redis_url`` (they move a URL's user and password
    to ``redis_username``/``redis_password``), so they are passed here; redis-py would let
    the URL's win. TLS options are given only for a ``rediss://`` URL: a plain connection
    class refuses them. A ``rediss://`` client verifies the server's certificate and host name.
    """
    options: dict[str, Any] = {}
    if settings.redis_username is not None:
        options["username"] = settings.redis_username
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    if urlparse(settings.redis_url).scheme == "rediss":
        options["ssl_cert_reqs"] = "required"
        for option, path in (
            ("ssl_ca_certs", settings.redis_ssl_cafile),
            ("ssl_certfile", settings.redis_ssl_certfile),
            ("ssl_keyfile", settings.redis_ssl_keyfile),
        ):
            if path is not None:
                options[option] = str(path)
    return options


def redis_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """An asyncio client of ``settings.redis_url`` (connects on first use)."""
    return aioredis.Redis.from_url(
        settings.redis_url, **{**connection_options(settings), **options}
    )


def sync_redis_client(settings: Settings, **options: Any) -> redis.Redis:
    """A blocking client of ``settings.redis_url``, for command-line tools and benchmarks."""
    return redis.Redis.from_url(settings.redis_url, **{**connection_options(settings), **options})
