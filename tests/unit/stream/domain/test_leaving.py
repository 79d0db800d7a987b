"""A user leaving: the batch's rounds around a leave, the erasure row and the leave event."""

from __future__ import annotations

import json

import jsonschema
import pytest

from segstream.stream.domain.changes import (
    current_segment,
    encode_change,
    encode_leave,
    event_id,
    is_leave,
    outbox_outputs,
)
from segstream.stream.domain.events import (
    Event,
    OrderEvent,
    OrderItem,
    Source,
    UserEvent,
    UserLeft,
    load_schema,
)
from segstream.stream.domain.leaving import plan_leave, split_rounds
from segstream.stream.domain.topics import Output
from segstream.stream.domain.user import UserState

LEAVE_AT = "2026-12-06T21:00:00.000Z"


def _order(user_id: int, order_id: int) -> OrderEvent:
    item = OrderItem(1, "Zoë", "Jeans", 9.5)
    return OrderEvent(order_id, user_id, "Shipped", "2024-01-01T00:00:00Z", (item,))


def _profile(user_id: int) -> UserEvent:
    return UserEvent(user_id, 30, "F", "Japan", "Search", "2024-01-01T00:00:00Z")


def _state(user_id: int, segment: int | None, changes: int) -> UserState:
    return UserState(
        user_id, 0, 30, "F", "Japan", "Search", 2, "Zoë", "Jeans",
        segment, None if segment is None else "v1", 0, changes, feature_version=3,
    )  # fmt: skip


class TestSplitRounds:
    def test_a_batch_without_leaves_is_one_round_unchanged(self) -> None:
        by_user: dict[int, list[tuple[Source, Event]]] = {
            1: [(Source("orders", 0, 5), _order(1, 10))],
            2: [(Source("users", 0, 6), _profile(2))],
        }
        (only,) = split_rounds(by_user)
        assert only.events == by_user
        assert only.leaves == {}

    def test_events_before_the_last_leave_are_dropped_with_the_user(self) -> None:
        leave_1 = (Source("users", 0, 7), UserLeft(1, LEAVE_AT))
        leave_2 = (Source("users", 0, 9), UserLeft(1, LEAVE_AT))
        by_user: dict[int, list[tuple[Source, Event]]] = {
            1: [(Source("orders", 0, 5), _order(1, 10)), leave_1, (Source("users", 0, 8),
                _profile(1)), leave_2],
            3: [(Source("orders", 0, 6), _order(3, 11))],
        }  # fmt: skip
        (only,) = split_rounds(by_user)
        assert only.events == {1: [], 3: by_user[3]}
        assert only.leaves == {1: leave_2}

    def test_events_after_the_leave_start_the_user_afresh_in_a_second_round(self) -> None:
        leave = (Source("users", 1, 7), UserLeft(4, LEAVE_AT))
        after = [(Source("orders", 1, 8), _order(4, 12)), (Source("users", 1, 9), _profile(4))]
        by_user: dict[int, list[tuple[Source, Event]]] = {
            4: [(Source("orders", 1, 5), _order(4, 10)), leave, *after],
            5: [(Source("orders", 1, 6), _order(5, 11))],
        }
        first, second = split_rounds(by_user)
        assert first.events == {4: [], 5: by_user[5]}
        assert first.leaves == {4: leave}
        # The leave leads the new life's events: applied as a fence only.
        assert second.events == {4: [leave, *after]}
        assert second.leaves == {}


class TestLeaveEvent:
    def test_plan_leave_numbers_on_from_the_users_last_change_and_names_its_segment(self) -> None:
        source = Source("users", 2, 40)
        row = plan_leave(_state(7, 3, changes=4), source, UserLeft(7, LEAVE_AT))
        document = json.loads(row.change)
        jsonschema.validate(document, load_schema("segment_left"))
        assert document == {
            "event_id": event_id(7, 5, "v1", source),
            "user_id": 7,
            "sequence": 5,
            "left": True,
            "previous_segment": 3,
            "model_version": "v1",
            "occurred_at": LEAVE_AT,
            "source": {"topic": "users", "partition": 2, "offset": 40},
        }
        assert (row.seen_segment, row.seen_model_version, row.seen_changes) == (3, "v1", 4)
        assert is_leave(document)

    def test_a_user_never_assigned_leaves_with_sequence_1_and_no_segment(self) -> None:
        row = plan_leave(_state(8, None, changes=0), Source("users", 0, 3), UserLeft(8, LEAVE_AT))
        document = json.loads(row.change)
        jsonschema.validate(document, load_schema("segment_left"))
        assert (document["sequence"], document["previous_segment"]) == (1, None)
        assert document["model_version"] is None

    def test_a_leave_is_not_a_segment_change_and_a_change_is_not_a_leave(self) -> None:
        leave = json.loads(
            plan_leave(_state(7, 3, 4), Source("users", 0, 1), UserLeft(7, LEAVE_AT)).change
        )
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(leave, load_schema("segment_change"))
        change = json.loads(_change(7, 1))
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(change, load_schema("segment_left"))
        assert not is_leave(change)

    def test_left_must_be_true(self) -> None:
        document = json.loads(encode_leave(
            user_id=1, sequence=1, previous_segment=None, model_version=None,
            occurred_at=LEAVE_AT, source=Source("users", 0, 1),
        ))  # fmt: skip
        document["left"] = False
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(document, load_schema("segment_left"))


def _change(user_id: int, sequence: int) -> bytes:
    return encode_change(
        user_id=user_id,
        sequence=sequence,
        previous_segment=None,
        segment=2,
        model_version="v1",
        occurred_at="2024-01-01T00:00:00Z",
        features={"age": 30},
        source=Source("orders", 0, sequence),
    )


class TestPublishingALeave:
    def test_pending_changes_then_the_leave_go_out_and_user_segments_gets_a_tombstone(self) -> None:
        change = _change(7, 4)
        leave = encode_leave(
            user_id=7, sequence=5, previous_segment=2, model_version="v1",
            occurred_at=LEAVE_AT, source=Source("users", 0, 9),
        )  # fmt: skip
        outputs = outbox_outputs({7: [change, leave]}, "changes", "segments")
        assert outputs == [
            Output("changes", b"7", change),
            Output("changes", b"7", leave),
            Output("segments", b"7", None),
        ]

    def test_a_change_after_a_new_life_publishes_its_segment_again(self) -> None:
        change = _change(7, 1)
        (_, current) = outbox_outputs({7: [change]}, "changes", "segments")
        assert current.value == current_segment(change)
