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

__all__ = [
    "as_bytes",
    "connection_options",
    "connection_problem",
    "redis_client",
    "sync_redis_client",
    "worker_redis_client",
]


def as_bytes(reply: bytes | str) -> bytes:
    """A string reply as bytes. The clients built here decode no replies, so this is the reply
    itself; redis-py types every string reply ``bytes | str`` whatever the client."""
    return reply.encode() if isinstance(reply, str) else reply


def connection_options(settings: Settings) -> dict[str, Any]:
    """The options every Redis client gets besides its URL: credentials and TLS files.

    The settings keep credentials out of ``redis_url`` (they move a URL's user and password
    to ``redis_username``/``redis_password``), so they are passed here; redis-py would let
    the URL's win. TLS options are given only for a ``rediss://`` URL: a plain connection
    class refuses them. A ``rediss://`` client verifies the server's certificate and host name:
    ``ssl_check_hostname`` is set explicitly: redis-py 5.x defaulted it off (6.0 turned it
    on); the dependency floor (8.2) has it on, and the explicit setting keeps it on whatever
    redis-py is installed.
    """
    options: dict[str, Any] = {}
    if settings.redis_username is not None:
        options["username"] = settings.redis_username
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    if urlparse(settings.redis_url).scheme == "rediss":
        options["ssl_cert_reqs"] = "required"
        options["ssl_check_hostname"] = True
        for option, path in (
            ("ssl_ca_certs", settings.redis_ssl_cafile),
            ("ssl_certfile", settings.redis_ssl_certfile),
            ("ssl_keyfile", settings.redis_ssl_keyfile),
        ):
            if path is not None:
                options[option] = str(path)
    return options


def redis_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """An asyncio client of ``settings.redis_url`` (connects on first use).

    With ``SEGSTREAM_REDIS_CLUSTER=true`` it is a :class:`redis.asyncio.cluster.RedisCluster`
    seeded from that URL (it learns the other nodes, follows MOVED/ASK and refreshes its slot
    map on failover); both speak the same commands for one hash slot.
    """
    merged = {**connection_options(settings), **options}
    if settings.redis_cluster:
        return aioredis.RedisCluster.from_url(settings.redis_url, **merged)  # type: ignore[return-value]
    return aioredis.Redis.from_url(settings.redis_url, **merged)


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
    """A blocking client of ``settings.redis_url``, for command-line tools and benchmarks
    (a :class:`redis.cluster.RedisCluster` with ``SEGSTREAM_REDIS_CLUSTER=true``)."""
    merged = {**connection_options(settings), **options}
    if settings.redis_cluster:
        return redis.RedisCluster.from_url(settings.redis_url, **merged)  # type: ignore[return-value]
    return redis.Redis.from_url(settings.redis_url, **merged)


def connection_problem(settings: Settings, exc: BaseException) -> str | None:
    """The setting to change when ``exc`` (from a client of ``settings``) is a problem of
    configuration rather than a server that is down: refused credentials, an untrusted
    certificate, or plain text against a TLS port. None otherwise."""
    where = f"Redis at {settings.redis_display}"
    text = str(exc)
    if isinstance(exc, redis.exceptions.AuthenticationError) or "WRONGPASS" in text:
        return (
            f"{where} refused the credentials of user {settings.redis_username or 'default'!r}: "
            "check SEGSTREAM_REDIS_USERNAME and SEGSTREAM_REDIS_PASSWORD (or the URL's)"
        )
    if "Hostname mismatch" in text or "IP address mismatch" in text:
        # OpenSSL's wording when the chain is trusted but names another host.
        return (
            f"{where} presented a certificate issued for another host name: connect by a "
            "name the certificate lists (the host of SEGSTREAM_REDIS_URL), or have the "
            "server's certificate reissued for this one"
        )
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            f"{where} presented a certificate this client does not trust: set "
            "SEGSTREAM_REDIS_SSL_CAFILE to the CA that signed it"
        )
    plain = urlparse(settings.redis_url).scheme == "redis"
    if plain and ("reset by peer" in text or "Connection closed by server" in text):
        return (
            f"{where} dropped the connection at once: if its port is TLS-only, use a "
            "rediss:// SEGSTREAM_REDIS_URL"
        )
    return None
