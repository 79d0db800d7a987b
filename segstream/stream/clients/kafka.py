"""Building the Kafka clients segstream uses, from :class:`~segstream.settings.Settings`.

Every producer, consumer and admin client of the product is built here, so the connection
options (servers today; security next) are set in one place. Callers pass what differs per use
(a group, timeouts, fetch sizes) as keyword arguments, which override the common options.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from segstream.settings import Settings

__all__ = ["admin_client", "connection_options", "consumer", "output_producer", "producer"]


def connection_options(settings: Settings) -> dict[str, Any]:
    """The options every Kafka client gets: where the brokers are."""
    return {"bootstrap_servers": settings.kafka_bootstrap_servers}


def admin_client(settings: Settings, **options: Any) -> AIOKafkaAdminClient:
    """An admin client (not started)."""
    return AIOKafkaAdminClient(**{**connection_options(settings), **options})


def consumer(settings: Settings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer (not started), subscribed to ``topics`` if any are given."""
    return AIOKafkaConsumer(*topics, **{**connection_options(settings), **options})


def producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """A producer (not started)."""
    return AIOKafkaProducer(**{**connection_options(settings), **options})


OUTPUT_BATCH_BYTES = 256 * 1024
"""Largest record batch the output producer builds, in bytes (less if the limit is lower)."""


DEFAULT_REQUEST_BYTES = 1024 * 1024
"""The Kafka clients' default ``max_request_size`` (1 MiB), for outputs that are all small."""


def output_producer(
    settings: Settings, max_request_size: int = DEFAULT_REQUEST_BYTES
) -> AIOKafkaProducer:
    """The producer of the worker's outputs (not started).

    Its own aiokafka producer rather than Faust's: the publisher appends records to record
    batches directly, which Faust's producer does not expose. Idempotent with ``acks="all"``:
    a record is acknowledged once every in-sync replica has it, and the producer's own
    retries neither duplicate nor reorder it.

    Args:
        max_request_size: the largest record batch the broker accepts, in bytes (the
            dead-letter topic's ``max.message.bytes``, :func:`segstream.stream.kafka.topics.
            max_message_bytes`). A record above it is refused by the producer itself, and
            batches are built no larger, so the broker never refuses one for its size. The
            default suits a producer of segment changes only (``segstream reassign``).
    """
    return producer(
        settings,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        max_batch_size=min(OUTPUT_BATCH_BYTES, max_request_size),
        max_request_size=max_request_size,
    )
