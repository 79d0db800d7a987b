"""Publishing a batch's outputs and waiting until the broker has acknowledged every one.

:meth:`AiokafkaSender.publish` is what makes the worker's output lossless: it returns only when
every record is acknowledged (the producer uses ``acks="all"``). Records are grouped by topic
and partition, in their original order, and appended to aiokafka record batches directly
(``create_batch``/``send_batch``): well under a µs a record instead of the ~25 µs of one
``send`` call each, which matters at thousands of changes a second. The partition is the one
Kafka's default partitioner picks for the key (murmur2, as the Java client and
``send(key=...)``), so every record of a user lands on one partition, in order, and
``user-segments`` compacts per user. The partition count is read from the producer's cluster
metadata at every publish, not kept: aiokafka refreshes that metadata (every
``metadata_max_age_ms`` and on errors), so partitions added to an output topic are used once
the producer has seen them, as ``send(key=...)`` would, instead of never.

On a broker error the failed partition's records are sent again, from its first unacknowledged
batch on, in order, after a backoff, without limit: per-user order survives a retry, and the
re-sent changes carry their original event_id (consumers of ``segment-changes`` deduplicate on
it; ``user-segments`` is idempotent by key). A permanent broker error (refused ACLs, a deleted
topic, a record too large; :func:`~segstream.stream.clients.retry.kafka_fault`) raises a
ServiceError naming it at once, and any other error propagates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from segstream.stream.clients.retry import (
    KAFKA_TRANSIENT,
    backoff_delays,
    describe,
    raise_if_permanent,
)
from segstream.stream.domain.topics import Output

__all__ = ["AiokafkaSender", "Sender", "default_partition", "group_by_partition"]

log = logging.getLogger(__name__)


class Sender(Protocol):
    """Publishes records and returns once the broker acknowledged all of them."""

    async def publish(self, outputs: Sequence[Output]) -> None:
        """Send ``outputs`` in order; retry broker errors until every one is acknowledged."""
        ...


def default_partition(key: bytes | None, partitions: int, fallback: int = 0) -> int:
    """Kafka's default partition of ``key`` among ``partitions`` (murmur2, positive, modulo).

    A record without a key goes to ``fallback`` (the default partitioner would pick one at
    random; a fixed one keeps a batch's unkeyed records in order).
    """
    if key is None:
        return fallback % partitions
    hashed: int = murmur2(key)  # aiokafka is untyped: its murmur2 returns a signed 32-bit int
    return (hashed & 0x7FFFFFFF) % partitions


def group_by_partition(
    outputs: Sequence[Output], partitions_of: Callable[[str], int]
) -> dict[tuple[str, int], list[Output]]:
    """``outputs`` grouped by (topic, partition), each group in the original order (pure)."""
    groups: dict[tuple[str, int], list[Output]] = {}
    for output in outputs:
        target = (output.topic, default_partition(output.key, partitions_of(output.topic)))
        group = groups.get(target)
        if group is None:
            groups[target] = [output]
        else:
            group.append(output)
    return groups


class AiokafkaSender:
    """Publishes through a started :class:`aiokafka.AIOKafkaProducer` (``acks="all"``)."""

    def __init__(
        self, producer: AIOKafkaProducer, first_delay_s: float = 0.1, max_delay_s: float = 5.0
    ) -> None:
        self.producer = producer
        self._delay = backoff_delays(first_delay_s, max_delay_s)

    async def _partition_counts(self, topics: set[str]) -> dict[str, int]:
        """Each topic's partition count now, from the producer's metadata (no round trip
        unless a topic is new to it)."""
        return {topic: len(await self.producer.partitions_for(topic)) for topic in topics}

    async def _send_group(self, topic: str, partition: int, outputs: Sequence[Output]) -> int:
        """Send one partition's records in batches; returns how many were acknowledged."""
        producer = self.producer
        sent: list[tuple[int, Awaitable[Any]]] = []  # (records sent so far, ack future)
        batch = producer.create_batch()
        in_batch = 0
        for index, output in enumerate(outputs):
            key, value, headers = output.key, output.value, list(output.headers)
            if batch.append(key=key, value=value, timestamp=None, headers=headers):
                in_batch += 1
                continue
            if in_batch:  # full: send it and start the next one with this record
                sent.append((index, await producer.send_batch(batch, topic, partition=partition)))
                batch, in_batch = producer.create_batch(), 0
                if batch.append(key=key, value=value, timestamp=None, headers=headers):
                    in_batch = 1
                    continue
            # Larger than an empty batch: send() sizes a batch for it.
            future = await producer.send(
                topic, value, key=key, partition=partition, headers=headers
            )
            sent.append((index + 1, future))
        if in_batch:
            last = await producer.send_batch(batch, topic, partition=partition)
            sent.append((len(outputs), last))
        acknowledged = 0
        for upto, future in sent:
            try:
                await future
            except KAFKA_TRANSIENT as exc:
                raise_if_permanent(exc, f"publishing to {topic}[{partition}]")
                log.warning(
                    "%s[%d] failed after %d records: %s",
                    topic,
                    partition,
                    acknowledged,
                    describe(exc),
                )
                return acknowledged
            acknowledged = upto
        return acknowledged

    async def publish(self, outputs: Sequence[Output]) -> None:
        """Send ``outputs`` per partition, in order; retry failures without limit.

        Raises:
            ServiceError: a permanent broker error (the message names it and what to change).
        """
        failures = 0
        while outputs:
            try:
                counts = await self._partition_counts({output.topic for output in outputs})
                groups = group_by_partition(outputs, counts.__getitem__)
                acknowledged = await asyncio.gather(
                    *(self._send_group(t, p, group) for (t, p), group in groups.items())
                )
            except KAFKA_TRANSIENT as exc:
                raise_if_permanent(exc, "publishing the outputs")
                error: BaseException = exc
            else:
                outputs = [
                    output
                    for group, done in zip(groups.values(), acknowledged, strict=True)
                    for output in group[done:]
                ]
                if not outputs:
                    return
                error = RuntimeError(f"{len(outputs)} records not acknowledged")
            failures += 1
            wait = self._delay(failures)
            level = logging.WARNING if failures < 10 else logging.ERROR
            log.log(
                level,
                "publishing failed (%s); re-sending %d in %.2fs",
                describe(error),
                len(outputs),
                wait,
            )
            await asyncio.sleep(wait)
