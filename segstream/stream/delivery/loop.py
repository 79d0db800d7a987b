"""One destination's delivery loop: consume, POST in order, dead-letter, then commit.

Each destination has a consumer group of its own (``<app_id>-deliver-<destination>``) on
``segment-changes``, so its offsets say exactly what *it* acknowledged or dead-lettered, and a
destination that is down stalls only its own group: the others keep delivering. Several deliver
processes share each group's partitions as workers do.

Per batch, in this order: fetch up to ``batch_size`` records (waiting at most ``linger_ms``
once the first arrived), drop those a backfill covered, POST the rest as one body (retrying,
:class:`~segstream.stream.delivery.sender.Sender`), dead-letter them if given up, and only then
commit the batch's offsets. A crash anywhere before the commit re-sends the batch after a
restart: the same events with the same idempotency keys (at-least-once delivery, exactly-once in
effect for a receiver that deduplicates by key).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord
from redis.asyncio import Redis

from segstream.settings import Settings
from segstream.stream.clients.kafka import consumer as kafka_consumer
from segstream.stream.clients.retry import KAFKA_TRANSIENT, REDIS_TRANSIENT, retry
from segstream.stream.delivery.config import Destination
from segstream.stream.delivery.dead_letters import encode_dead_letter
from segstream.stream.delivery.floors import drop_floors, floor_key, read_floors
from segstream.stream.delivery.metrics import DeliveryMetrics
from segstream.stream.delivery.ordering import above_floor, next_offsets
from segstream.stream.delivery.payload import DeliveryEvent, change_event
from segstream.stream.delivery.sender import Outcome, Sender

__all__ = ["DestinationLoop", "group_of", "poll_interval_ms", "redrive_group"]

log = logging.getLogger(__name__)


def group_of(settings: Settings, destination: str) -> str:
    """The consumer group that delivers to ``destination``."""
    return f"{settings.app_id}-deliver-{destination}"


def redrive_group(settings: Settings) -> str:
    """The consumer group of ``segstream deliver --redrive`` on the delivery dead letters: its
    committed offsets mark the letters already sent again."""
    return f"{settings.app_id}-deliver-redrive"


def poll_interval_ms(destination: Destination) -> int:
    """Longest a batch may take, in ms, before Kafka takes the consumer for dead: every attempt
    timing out and waiting the longest backoff, plus a minute (at least Kafka's 5 minutes)."""
    budget_s = destination.max_attempts * (destination.timeout_s + destination.backoff_max_s)
    return int(max(300.0, budget_s + 60.0) * 1000)


async def dead_letter(
    producer: AIOKafkaProducer,
    settings: Settings,
    destination: str,
    items: Sequence[tuple[DeliveryEvent | None, bytes]],
    outcome: Outcome,
) -> None:
    """Publish one dead letter per ``(event, raw value)`` and wait for the broker's ack."""

    async def publish() -> None:
        futures = []
        for event, raw in items:
            key, value = encode_dead_letter(
                destination,
                event,
                raw,
                last_status=outcome.last_status,
                error=outcome.error,
                attempts=outcome.attempts,
            )
            futures.append(
                await producer.send(settings.topic_delivery_dead_letters, value, key=key)
            )
        await asyncio.gather(*futures)

    await retry(
        publish,
        what=f"dead-lettering {len(items)} events of destination {destination}",
        transient=KAFKA_TRANSIENT,
        max_delay_s=10.0,
    )


class _Revocation(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Lets a rebalance take partitions only between batches (the loop holds ``lock`` from
    POST to commit), so two processes never POST one user's changes at once."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock

    async def on_partitions_revoked(self, revoked: object) -> None:
        async with self._lock:
            pass

    async def on_partitions_assigned(self, assigned: object) -> None:
        return None


class DestinationLoop:
    """Delivers ``segment-changes`` to one destination until ``stopping`` is set."""

    def __init__(
        self,
        settings: Settings,
        destination: Destination,
        metrics: DeliveryMetrics,
        producer: AIOKafkaProducer,
        redis: Redis,
    ) -> None:
        self.settings = settings
        self.destination = destination
        self._metrics = metrics
        self._producer = producer
        self._redis = redis
        self._lock = asyncio.Lock()
        self._floor_key = floor_key(settings, destination.name)
        self.delivered = 0
        self.dead_lettered = 0

    def _consumer(self) -> AIOKafkaConsumer:
        return kafka_consumer(
            self.settings,
            group_id=group_of(self.settings, self.destination.name),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=poll_interval_ms(self.destination),
            isolation_level="read_committed",
        )

    async def _fetch(
        self, consumer: AIOKafkaConsumer, stopping: asyncio.Event
    ) -> list[ConsumerRecord]:
        """Up to ``batch_size`` records: waits for the first, then lingers for more."""
        size, linger = self.destination.batch_size, self.destination.linger_ms / 1000
        records: list[ConsumerRecord] = []
        deadline: float | None = None
        while len(records) < size and not stopping.is_set():
            wait_s = 0.5 if deadline is None else deadline - time.monotonic()
            if deadline is not None and wait_s <= 0:
                break
            fetched = await consumer.getmany(
                timeout_ms=max(1, int(wait_s * 1000)), max_records=size - len(records)
            )
            for partition_records in fetched.values():
                records.extend(partition_records)
            if records and deadline is None:
                deadline = time.monotonic() + linger
        return records

    async def _floors(self, events: Sequence[DeliveryEvent]) -> dict[int, int]:
        return await retry(
            lambda: read_floors(self._redis, self._floor_key, (e.user_id for e in events)),
            what=f"reading the backfill floors of destination {self.destination.name}",
            transient=REDIS_TRANSIENT,
            max_delay_s=10.0,
        )

    async def handle(
        self, sender: Sender, records: Sequence[ConsumerRecord]
    ) -> tuple[list[DeliveryEvent], Outcome | None]:
        """POST ``records``' changes (those above the floors) and dead-letter what fails."""
        name = self.destination.name
        events: list[DeliveryEvent] = []
        unreadable: list[tuple[DeliveryEvent | None, bytes]] = []
        stamps: dict[str, float] = {}
        for record in records:
            try:
                event = change_event(record.value)
            except ValueError as exc:
                log.error(
                    "destination %s: %s at offset %d: %s", name, record.topic, record.offset, exc
                )
                unreadable.append((None, record.value or b""))
                continue
            events.append(event)
            stamps[event.idempotency_key] = record.timestamp / 1000
        if unreadable:
            failed = Outcome(False, 0, None, "not a segment change event")
            await dead_letter(self._producer, self.settings, name, unreadable, failed)
            self._metrics.failed.labels(name).inc(len(unreadable))
        events = above_floor(events, await self._floors(events)) if events else []
        if not events:
            return [], None
        outcome = await sender.deliver(events)
        if outcome.delivered:
            now = time.time()
            for event in events:
                self._metrics.latency.labels(name).observe(
                    max(0.0, now - stamps[event.idempotency_key])
                )
            self.delivered += len(events)
        else:
            await dead_letter(
                self._producer, self.settings, name, [(e, e.raw) for e in events], outcome
            )
            self.dead_lettered += len(events)
        left = [e.user_id for e in events if e.kind == "user_left"]
        if left:
            # Before the commit: a crash in between re-sends the batch, never skips a change.
            await retry(
                lambda: drop_floors(self._redis, self._floor_key, left),
                what=f"dropping the floors of users who left, destination {name}",
                transient=REDIS_TRANSIENT,
                max_delay_s=10.0,
            )
        return events, outcome

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver until ``stopping`` is set; returns after the batch in hand is committed."""
        consumer = self._consumer()
        consumer.subscribe([self.settings.topic_segment_changes], listener=_Revocation(self._lock))
        await retry(
            consumer.start,
            what=f"connecting the delivery consumer of {self.destination.name} to Kafka",
            transient=KAFKA_TRANSIENT,
            max_delay_s=10.0,
        )
        try:
            async with Sender(self.destination, self._metrics) as sender:
                while not stopping.is_set():
                    records = await self._fetch(consumer, stopping)
                    async with self._lock:
                        owned = consumer.assignment()
                        # A rebalance between fetch and lock gave some away: their new owner
                        # sends them, in order; sending them here too could interleave.
                        records = [
                            r for r in records if TopicPartition(r.topic, r.partition) in owned
                        ]
                        if records:
                            await self.handle(sender, records)
                            await self._commit(consumer, records)
        finally:
            await consumer.stop()

    async def _commit(self, consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord]) -> None:
        offsets = next_offsets(records)

        async def commit() -> None:
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # Partitions moved to another process: it re-sends from the last commit, with
                # the same idempotency keys. Retrying cannot help.
                log.warning("destination %s: commit refused (%s)", self.destination.name, exc)

        await retry(
            commit,
            what=f"committing the offsets of destination {self.destination.name}",
            transient=KAFKA_TRANSIENT,
            max_delay_s=5.0,
        )
