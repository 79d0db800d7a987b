"""The one place that builds Kafka and Redis clients from the settings, and the retry policy.

Connection options (servers, security, cluster mode) are set here and nowhere else; which errors
are transient and how long to back off is :mod:`.retry`.
"""

from __future__ import annotations

from segstream.stream.clients.kafka import (
    admin_client,
    connection_options,
    consumer,
    output_producer,
    producer,
)
from segstream.stream.clients.redis import redis_client, sync_redis_client, worker_redis_client
from segstream.stream.clients.retry import KAFKA_TRANSIENT, REDIS_TRANSIENT, backoff_delays, retry

__all__ = [
    "KAFKA_TRANSIENT",
    "REDIS_TRANSIENT",
    "admin_client",
    "backoff_delays",
    "connection_options",
    "consumer",
    "output_producer",
    "producer",
    "redis_client",
    "retry",
    "sync_redis_client",
    "worker_redis_client",
]
