from __future__ import annotations

from dataclasses import replace

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


def test_a_leave_ends_the_floor_so_the_next_life_is_sent() -> None:
    left = replace(snapshot_event(1, 4, 0, "v", ""), kind="user_left", segment=None)
    events = [snapshot_event(1, 2, 0, "v", ""), left, snapshot_event(1, 1, 3, "v", "")]
    kept = above_floor(events, {1: 3})
    assert [(e.kind, e.sequence) for e in kept] == [("user_left", 4), ("snapshot", 1)]
