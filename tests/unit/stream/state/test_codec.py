"""Encoding the scripts' arguments and decoding their replies and a user's raw hash."""

from __future__ import annotations

import json

import pytest

from segstream.stream.domain.events import (
    OrderEvent,
    OrderItem,
    Source,
    UserEvent,
    UserLeft,
)
from segstream.stream.domain.leaving import Leave
from segstream.stream.domain.user import Settle
from segstream.stream.state.codec import (
    decode_settle,
    decode_state,
    decode_states,
    describe_user,
    encode_events,
    encode_settle_row,
)


def test_events_are_encoded_in_order_with_their_fences() -> None:
    profile = UserEvent(7, 33, "M", "China", "Email", "2023-01-01T00:00:00Z")
    items = (OrderItem(1, "Levi's", None, 3.0), OrderItem(2, None, "Jeans", 4.0))
    order = OrderEvent(70, 7, "Complete", "2023-01-02T00:00:00Z", items)
    args = encode_events([(Source("orders", 3, 12), order), (Source("users", 3, 5), profile)])
    assert args == [
        ["o", "f:orders:3", "12", "70", ["Levi's", "", "", "Jeans"]],
        ["u", "f:users:3", "5", "33", "M", "China", "Email"],
    ]


def test_a_leave_travels_to_apply_as_its_fence_only() -> None:
    leave = UserLeft(7, "2026-12-06T21:00:00.000Z")
    profile = UserEvent(7, 33, "M", "China", "Email", "2023-01-01T00:00:00Z")
    args = encode_events([(Source("users", 1, 9), leave), (Source("users", 1, 10), profile)])
    assert args == [["f", "f:users:1", "9"], ["u", "f:users:1", "10", "33", "M", "China", "Email"]]


def test_reply_with_missing_fields_decodes_to_an_unassignable_state() -> None:
    state = decode_state(
        7, [1, None, None, None, None, b"2", b"Zo\xc3\xab", b"Jeans", None, None, 0]
    )
    assert (state.total_orders, state.most_frequent_brand, state.segment) == (2, "Zoë", None)
    assert not state.assignable


def test_full_reply_is_assignable_with_typed_features() -> None:
    reply = [0, b"33", b"M", b"China", b"Email", b"1", b"Levi's", b"Jeans", b"4", b"v9", 1]
    state = decode_state(7, reply)
    assert state.assignable
    assert state.features()["age"] == 33
    assert (state.segment, state.model_version, state.pending, state.applied) == (4, "v9", 1, 0)


def test_change_count_and_features_version_decode_and_default_to_zero() -> None:
    full = [0, b"33", b"M", b"China", b"Email", b"1", b"Levi's", b"Jeans", b"4", b"v9", 0, 3, 8]
    state = decode_state(7, full)
    assert (state.changes, state.feature_version) == (3, 8)
    for short in (full[:11], full[:12], [*full[:11], None, None]):
        assert decode_state(7, short).feature_version == 0
    assert decode_state(7, full[:12]).changes == 3


def test_describe_user_lists_counts_orders_fences_and_pending_changes() -> None:
    fields = {
        b"age": b"30", b"gen": b"F", b"cty": b"Japan", b"src": b"Search", b"n": b"2",
        b"tb": b"Zo\xc3\xab", b"tc": b"Jeans", b"seg": b"1", b"mv": b"v1", b"cs": b"2",
        b"fv": b"4", b"ua": b"2024-01-01T00:00:00Z", b"o:12": b"1", b"o:3": b"1",
        b"b:Zo\xc3\xab": b"2", b"b:Alpha": b"2", b"c:Jeans": b"3", b"f:orders:1": b"77",
    }  # fmt: skip
    described = describe_user(5, fields, [json.dumps({"event_id": "e"}).encode()])
    assert (described["orders"], described["orders_floor"]) == ([3, 12], None)
    assert describe_user(5, {**fields, b"of": b"2"}, [])["orders_floor"] == 2
    assert described["brand_counts"] == {"Alpha": 2, "Zoë": 2}
    assert described["fences"] == {"orders:1": 77}
    assert (described["segment"], described["changes"], described["assignable"]) == (1, 2, True)
    assert described["feature_version"] == 4
    assert described["pending"] == [{"event_id": "e"}]


def test_describe_user_shows_the_drift_epoch_in_drift_mode_only() -> None:
    fields = {b"age": b"30", b"seg": b"1", b"mv": b"v1"}
    assert describe_user(5, {**fields, b"de": b"3"}, [])["drift_epoch"] == 3
    assert describe_user(5, fields, [])["drift_epoch"] is None


class TestApplyReplies:
    def test_each_users_thirteen_values_decode_to_their_state_in_the_callers_order(
        self,
    ) -> None:
        def reply(age: bytes, segment: bytes | None) -> list[object]:
            return [1, age, b"M", b"China", b"Email", b"1", b"A", b"B", segment, b"v1", 0, 2, 5]

        # Two calls (two slots of a cluster): users 1 and 3 in the first, 2 in the second.
        replies = [[*reply(b"20", b"0"), *reply(b"30", None)], reply(b"40", b"2")]
        states = decode_states([1, 2, 3], [[1, 3], [2]], replies)

        assert [(s.user_id, s.age, s.segment) for s in states] == [
            (1, 20, 0),
            (2, 40, 2),
            (3, 30, None),
        ]
        assert all((s.changes, s.feature_version) == (2, 5) for s in states)

    def test_a_reply_missing_for_a_group_is_an_error_not_a_silent_gap(self) -> None:
        with pytest.raises(ValueError):
            decode_states([1, 2], [[1], [2]], [[0, *[None] * 9, 0, 0, 0]])


class TestSettleRows:
    SOURCE = Source("users", 2, 41)

    def test_a_change_row_carries_what_was_seen_and_what_to_store_as_text(self) -> None:
        row = Settle(
            user_id=7,
            seen_segment=0,
            seen_model_version="v1",
            segment=2,
            model_version="v2",
            change=b'{"sequence":4}',
            updated_at="2026-01-01T00:00:00Z",
            seen_changes=3,
            seen_feature_version=11,
            drift_epoch=5,
        )
        assert encode_settle_row(row) == [
            "0", "v1", "2", "v2", '{"sequence":4}', "2026-01-01T00:00:00Z", "3", "11", "5",
        ]  # fmt: skip

    def test_none_travels_as_the_empty_string(self) -> None:
        first = Settle(7, None, None, 0, "v1", b"{}", "2026-01-01T00:00:00Z")
        unassign = Settle(7, 0, "v1", None, None, b"{}", "2026-01-01T00:00:00Z", 1, 2)
        read = Settle(7, 0, "v1", 0, "v1", None)

        assert encode_settle_row(first)[:2] == ["", ""]
        assert encode_settle_row(unassign)[2:4] == ["", ""]
        assert encode_settle_row(read)[4:6] == ["", ""]
        assert all(encode_settle_row(row)[8] == "" for row in (first, unassign, read))

    def test_segment_zero_is_a_segment_not_none(self) -> None:
        row = Settle(7, 0, "v1", 0, "v2", None)
        assert encode_settle_row(row)[0] == encode_settle_row(row)[2] == "0"

    def test_a_leave_row_is_marked_with_its_fence_and_offset(self) -> None:
        leave = Leave(7, self.SOURCE, 2, "v1", 3, b'{"left":true}')
        assert encode_settle_row(leave) == ["x", "f:users:2", "41", "2", "v1", "3", '{"left":true}']

    def test_a_leave_of_a_user_never_assigned_sends_empty_seen_values(self) -> None:
        leave = Leave(7, self.SOURCE, None, None, 0, b"{}")
        assert encode_settle_row(leave)[3:6] == ["", "", "0"]


class TestSettleReplies:
    def test_outboxes_and_refused_positions_map_back_to_their_users(self) -> None:
        # Per call: one outbox per user of its group, then the refused rows' 1-based positions.
        replies = [[[b"a1", b"a2"], [], []], [[b"c1"], [1]]]
        pending, refused = decode_settle([[10, 30], [20]], replies)

        assert pending == {10: [b"a1", b"a2"], 20: [b"c1"]}
        assert refused == {20}

    def test_a_user_without_pending_changes_is_left_out(self) -> None:
        pending, refused = decode_settle([[1, 2]], [[[], [], []]])
        assert (pending, refused) == ({}, set())

    def test_a_reply_with_an_outbox_short_is_an_error(self) -> None:
        with pytest.raises(ValueError):
            decode_settle([[1, 2]], [[[b"x"], []]])
