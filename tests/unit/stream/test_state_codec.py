"""Arguments to and replies from the Lua state scripts, without a server."""

from __future__ import annotations

from segstream.stream.domain.events import OrderEvent, OrderItem, Source, UserEvent
from segstream.stream.state.codec import decode_state, encode_events
from segstream.stream.state.keys import outbox_key, state_key


def test_keys_share_the_user_hash_tag() -> None:
    assert state_key("app:", 42) == "app:{u:42}"
    assert outbox_key("app:", 42) == "app:{u:42}:ob"


def test_events_are_encoded_in_order_with_their_fences() -> None:
    profile = UserEvent(7, 33, "M", "China", "Email", "2023-01-01T00:00:00Z")
    items = (OrderItem(1, "Levi's", None, 3.0), OrderItem(2, None, "Jeans", 4.0))
    order = OrderEvent(70, 7, "Complete", "2023-01-02T00:00:00Z", items)
    args = encode_events([(Source("orders", 3, 12), order), (Source("users", 3, 5), profile)])
    assert args == [
        ["o", "f:orders:3", "12", "70", ["Levi's", "", "", "Jeans"]],
        ["u", "f:users:3", "5", "33", "M", "China", "Email"],
    ]


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
