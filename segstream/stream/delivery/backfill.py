"""``segstream deliver --backfill DESTINATION``: every user's current segment to a new
destination, then the live stream from exactly where the snapshot left off.

Steps, in this order (the order is the guarantee):

1. note the end offsets ``E`` of ``segment-changes``;
2. read every user's stored state from Redis: segment and sequence ``n`` (the number of their
   changes, counted atomically with the segment);
3. POST one ``snapshot`` event per user with a segment (dead-lettered if given up);
4. store each user's ``n`` as the destination's floor, and commit ``E`` for its group.

A change the worker makes after step 2 read the user has a sequence above ``n`` and is settled
in Redis after that read, so published after ``E`` was noted: the live loop, starting at ``E``,
sends it. A change at or after ``E`` with sequence <= ``n`` was already part of the snapshot:
the live loop skips it (:func:`~segstream.stream.delivery.ordering.above_floor`). So nothing is
missed and nothing goes out of order.

It runs while no deliver process serves the destination, and refuses before sending anything
otherwise (:func:`check_unserved`, with the operator's steps, :data:`HANDOVER_STEPS`). A live
loop already running would be at an offset of its own, not ``E``: it could POST a change the
snapshot already covers after the snapshot (out of order), and Kafka refuses to set the
offsets of a group with members anyway. Adding a destination therefore never stops the
others: the backfill runs before the fleet's config names the destination (docs/delivery.md).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from segstream.errors import ServiceError
from segstream.settings import Settings
from segstream.stream.clients.kafka import consumer as kafka_consumer
from segstream.stream.clients.kafka import producer as kafka_producer
from segstream.stream.clients.redis import redis_client
from segstream.stream.clients.retry import KAFKA_TRANSIENT, REDIS_TRANSIENT, retry
from segstream.stream.delivery.config import Destination
from segstream.stream.delivery.floors import floor_key, write_floors
from segstream.stream.delivery.loop import dead_letter, group_of
from segstream.stream.delivery.metrics import DeliveryMetrics
from segstream.stream.delivery.payload import DeliveryEvent, snapshot_event
from segstream.stream.delivery.process import delivery_topics
from segstream.stream.delivery.sender import Sender
from segstream.stream.kafka.lag import LagReader
from segstream.stream.kafka.topics import partitions_of
from segstream.stream.state.keys import state_prefix, user_pattern
from segstream.stream.state.lookup import stored_user
from segstream.stream.state.store import RedisState

__all__ = ["HANDOVER_STEPS", "BackfillReport", "backfill", "check_unserved", "current_segments"]

log = logging.getLogger(__name__)
_USER = re.compile(rb"\{u:(\d+)\}$")
CHANGES_FIELD = b"cs"
"""The user hash's count of changes queued so far (``state/lua/apply.lua``): the sequence of
the user's last change."""


HANDOVER_STEPS = (
    "to add a destination to running deliver processes: (1) keep them on a config without "
    "it (roll back or stop those that have it; the other destinations go on); (2) run "
    "`segstream deliver --backfill {name}` with a config that has it; (3) then restart "
    "the deliver processes one by one on that config: {name} resumes exactly where the "
    "backfill handed over (docs/delivery.md, 'Adding a destination to running processes')"
)
"""What an operator does to add a destination while delivery runs; ``{name}``: the
destination. Said by every refusal of a backfill whose destination is being served."""


def _served_error(destination: str, group: str, detail: str) -> ServiceError:
    return ServiceError(
        f"cannot backfill {destination}: {detail} (consumer group {group}); "
        + HANDOVER_STEPS.format(name=destination)
    )


async def check_unserved(settings: Settings, destination: str) -> None:
    """Refuse, before anything is read or sent, while a deliver process serves ``destination``.

    Raises:
        ServiceError: its group has members (naming how many, and :data:`HANDOVER_STEPS`), or
            Kafka cannot be reached.
    """
    group = group_of(settings, destination)

    async def members() -> int:
        async with LagReader(settings, group, [settings.topic_segment_changes]) as reader:
            return await reader.members()

    serving = await retry(
        members,
        what=f"reading the members of consumer group {group}",
        transient=(*KAFKA_TRANSIENT, ServiceError),
        attempts=3,
    )
    if serving:
        raise _served_error(
            destination, group, f"{serving} running `segstream deliver` process(es) serve it"
        )


@dataclass(frozen=True)
class BackfillReport:
    """What a backfill did: users sent, dead-lettered, and the offsets handed over."""

    sent: int
    dead_lettered: int
    offsets: dict[int, int]


async def current_segments(settings: Settings) -> AsyncIterator[DeliveryEvent]:
    """A snapshot event for every user with a segment in Redis (SCAN order)."""
    client = redis_client(settings)
    state = RedisState(client, state_prefix(settings), cluster=settings.redis_cluster)
    try:
        async for key in client.scan_iter(match=user_pattern(state_prefix(settings)), count=1000):
            match = _USER.search(key if isinstance(key, bytes) else key.encode())
            if match is None:
                continue  # an outbox list or another key of the prefix
            user_id = int(match.group(1))
            fields, pending = await state.read_user(user_id)
            user = stored_user(user_id, fields, pending)
            if user is None or user.state.segment is None:
                continue  # seen, never assigned: no change yet, nothing to send
            # The user's change count, written with the segment by the same script.
            count = fields.get(CHANGES_FIELD)
            if count is None or int(count) < 1:
                log.warning("user %d has a segment but no change count; not backfilled", user_id)
                continue
            yield snapshot_event(
                user_id,
                int(count),
                user.state.segment,
                user.state.model_version or "",
                user.updated_at or "",
            )
    finally:
        await client.aclose()


async def _end_offsets(settings: Settings) -> dict[TopicPartition, int]:
    topic = settings.topic_segment_changes
    partitions = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
    consumer = kafka_consumer(settings, enable_auto_commit=False)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def _hand_over(
    settings: Settings, destination: str, offsets: dict[TopicPartition, int]
) -> None:
    consumer = kafka_consumer(
        settings, group_id=group_of(settings, destination), enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    except KafkaError as exc:
        # A deliver process joined the group while the snapshot was sent: its loop is at an
        # offset of its own, so the hand-over cannot be made; the snapshot will be sent again.
        raise _served_error(
            destination,
            group_of(settings, destination),
            f"a deliver process started serving it during the backfill, so its offsets "
            f"cannot be set ({type(exc).__name__}); stop it and run the backfill again",
        ) from exc
    finally:
        await consumer.stop()


async def backfill(settings: Settings, destination: Destination) -> BackfillReport:
    """Run the backfill of ``destination`` (see the module docstring).

    Raises:
        ServiceError: Kafka or Redis cannot be reached, or a deliver process serves the
            destination (checked first, and again at the hand-over).
    """
    await check_unserved(settings, destination.name)
    await delivery_topics(settings)
    offsets = await retry(
        lambda: _end_offsets(settings),
        what="reading the end offsets",
        transient=KAFKA_TRANSIENT,
        attempts=10,
    )
    metrics = DeliveryMetrics([destination.name])
    producer = kafka_producer(settings, acks="all", enable_idempotence=True)
    await producer.start()
    floors: dict[int, int] = {}
    sent = dead = 0
    try:
        async with Sender(destination, metrics) as sender:
            batch: list[DeliveryEvent] = []

            async def flush() -> None:
                nonlocal sent, dead
                outcome = await sender.deliver(batch)
                if outcome.delivered:
                    sent += len(batch)
                else:
                    await dead_letter(
                        producer, settings, destination.name, [(e, b"") for e in batch], outcome
                    )
                    dead += len(batch)
                batch.clear()

            async for event in current_segments(settings):
                floors[event.user_id] = event.sequence
                batch.append(event)
                if len(batch) >= destination.batch_size:
                    await flush()
            if batch:
                await flush()
    finally:
        await producer.stop()
    client = redis_client(settings)
    try:
        await retry(
            lambda: write_floors(client, floor_key(settings, destination.name), floors),
            what="writing the backfill floors",
            transient=REDIS_TRANSIENT,
            attempts=10,
        )
    finally:
        await client.aclose()
    await _hand_over(settings, destination.name, offsets)
    log.info("backfill of %s: %d users sent, %d dead-lettered", destination.name, sent, dead)
    return BackfillReport(sent, dead, {tp.partition: o for tp, o in offsets.items()})
