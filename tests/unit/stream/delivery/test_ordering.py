from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from segstream.stream.delivery.ordering import above_floor, next_offsets
from segstream.stream.delivery.payload import snapshot_event


def _record(partition: int, offset: int) -> ConsumerRecord:
    return ConsumerRecord("t", partition, offset, 0, 0, b"k", b"v", None, 1, 1, ())


def test_changes_a_backfill_covered_are_skipped() -> None:
    events = [snapshot_event(u, s, 0, "v", "") for u, s in ((1, 2), (1, 3), (2, 1))]
    kept = above_floor(events, {1: 2})
    assert [(e.user_id, e.sequence) for e in kept] == [(1, 3), (2, 1)]


def test_offsets_to_commit_are_one_past_the_highest_per_partition() -> None:
    records = [_record(0, 5), _record(1, 9), _record(0, 7)]
    assert next_offsets(records) == {TopicPartition("t", 0): 8, TopicPartition("t", 1): 10}
