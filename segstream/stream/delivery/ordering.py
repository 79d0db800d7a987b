"""Per-user order and the offsets a destination may commit (pure).

Changes of one user share a partition key, so one consumer reads them in sequence order and a
destination's loop POSTs them in that order, one batch after the other. After a backfill, the
destination has each user's state up to a *floor* sequence: a live change at or below it is
already covered by the snapshot and is skipped, so nothing goes out of order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from segstream.stream.delivery.payload import DeliveryEvent

__all__ = ["above_floor", "next_offsets"]


def above_floor(events: Sequence[DeliveryEvent], floors: Mapping[int, int]) -> list[DeliveryEvent]:
    """``events`` without those a backfill already covered (sequence <= the user's floor)."""
    return [e for e in events if e.sequence > floors.get(e.user_id, 0)]


def next_offsets(records: Iterable[ConsumerRecord]) -> dict[TopicPartition, int]:
    """The offsets to commit once ``records`` are acknowledged or dead-lettered: per
    partition, one past the highest offset seen."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        partition = TopicPartition(record.topic, record.partition)
        offsets[partition] = max(offsets.get(partition, 0), record.offset + 1)
    return offsets
