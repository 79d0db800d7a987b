"""``segstream deliver --redrive``: send the delivery dead letters again.

Reads ``SEGSTREAM_TOPIC_DELIVERY_DEAD_LETTERS`` with the group ``<app_id>-deliver-redrive``, up
to the end offsets at the start (letters written during the run wait for the next one), and
POSTs each letter's event to its destination again, in the letters' order, in batches. What
fails again is dead-lettered again (a new letter, after the end); a letter for a destination
that is not in the config is written back unchanged. Then the group's offsets are committed:
every letter read is either delivered or on the topic again, none is lost.

A redriven change may reach the destination after newer changes of the same user: it carries
its ``sequence``, and a receiver keeps, per user, the highest sequence it has seen.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

from aiokafka import TopicPartition

from segstream.settings import Settings
from segstream.stream.clients.kafka import consumer as kafka_consumer
from segstream.stream.clients.kafka import producer as kafka_producer
from segstream.stream.delivery.config import DeliveryConfig
from segstream.stream.delivery.dead_letters import decode_dead_letter, event_of
from segstream.stream.delivery.loop import dead_letter, redrive_group
from segstream.stream.delivery.metrics import DeliveryMetrics
from segstream.stream.delivery.payload import DeliveryEvent
from segstream.stream.delivery.process import delivery_topics
from segstream.stream.delivery.sender import Sender
from segstream.stream.kafka.topics import partitions_of

__all__ = ["RedriveReport", "redrive"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RedriveReport:
    """Letters read, events delivered, dead-lettered again, and kept for unknown destinations."""

    read: int
    delivered: int
    dead_lettered: int
    kept: int


async def redrive(settings: Settings, config: DeliveryConfig) -> RedriveReport:
    """Redrive every letter present at the start (see the module docstring)."""
    await delivery_topics(settings)
    topic = settings.topic_delivery_dead_letters
    partitions = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
    consumer = kafka_consumer(
        settings,
        group_id=redrive_group(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = kafka_producer(settings, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    read = delivered = dead = kept = 0
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        by_destination: dict[str, list[DeliveryEvent]] = defaultdict(list)
        remaining = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=1_000)
            for tp, records in fetched.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        continue
                    read += 1
                    event, letter = None, None
                    try:
                        letter = decode_dead_letter(record.value)
                        event = event_of(letter)
                    except (ValueError, KeyError, TypeError) as exc:
                        log.error("letter at %s:%d unreadable: %s", topic, record.offset, exc)
                    known = letter is not None and letter.destination in {
                        d.name for d in config.destinations
                    }
                    if event is None or not known:
                        # Nothing this config can send: keep it, unchanged, for later.
                        await producer.send_and_wait(topic, record.value, key=record.key)
                        kept += 1
                        continue
                    assert letter is not None
                    by_destination[letter.destination].append(event)
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        metrics = DeliveryMetrics(by_destination)
        for name, events in by_destination.items():
            destination = config.named(name)
            async with Sender(destination, metrics) as sender:
                for start in range(0, len(events), destination.batch_size):
                    batch = events[start : start + destination.batch_size]
                    outcome = await sender.deliver(batch)
                    if outcome.delivered:
                        delivered += len(batch)
                    else:
                        await dead_letter(
                            producer, settings, name, [(e, e.raw) for e in batch], outcome
                        )
                        dead += len(batch)
        await consumer.commit(ends)
    finally:
        await producer.stop()
        await consumer.stop()
    return RedriveReport(read, delivered, dead, kept)
