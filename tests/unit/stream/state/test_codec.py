"""Encoding the scripts' arguments and decoding their replies and a user's raw hash."""

from __future__ import annotations

import json

from segstream.stream.domain.events import (
    OrderEvent,
    OrderItem,
    Source,
    UserEvent,
    UserLeft,
)
from segstream.stream.state.codec import decode_state, describe_user, encode_events


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
