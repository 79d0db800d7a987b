"""Per-user order and the offsets a destination may commit (pure).

Changes of one user share a partition key, so one consumer reads them in sequence order and a
destination's loop POSTs them in that order, one batch after the other. After a backfill, the
destination has each user's state up to a *floor* sequence: a live change at or below it is
already covered by the snapshot and is skipped, so nothing goes out of order. A user who leaves
(``user_left``) loses their floor: their next life is numbered from 1 again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from segstream.stream.delivery.payload import DeliveryEvent

__all__ = ["above_floor", "next_offsets"]


def above_floor(events: Sequence[DeliveryEvent], floors: Mapping[int, int]) -> list[DeliveryEvent]:
    """``events`` (in order) without those a backfill already covered: sequence <= the user's
    floor. A ``user_left`` event ends the floor of its user: the user's later events start a
    new numbering from 1, which no snapshot covered."""
    ended: set[int] = set()
    kept = []
    for event in events:
        floor = 0 if event.user_id in ended else floors.get(event.user_id, 0)
        if event.sequence > floor:
            kept.append(event)
        if event.kind == "user_left":
            ended.add(event.user_id)
    return kept


def next_offsets(records: Iterable[ConsumerRecord]) -> dict[TopicPartition, int]:
    """The offsets to commit once ``records`` are acknowledged or dead-lettered: per
    partition, one past the highest offset seen."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        partition = TopicPartition(record.topic, record.partition)
        offsets[partition] = max(offsets.get(partition, 0), record.offset + 1)
    return offsets
