"""A batch sorted out (valid events by user, rejects aside) and the settle rows it needs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from segstream.stream.domain.batch import parse_batch, plan_settles
from segstream.stream.domain.changes import event_id
from segstream.stream.domain.dead_letters import read_headers, record_size
from segstream.stream.domain.events import (
    Event,
    OrderEvent,
    OrderItem,
    Source,
    UserEvent,
    UserLeft,
)
from segstream.stream.domain.topics import Topics
from segstream.stream.domain.user import UserState

TOPICS = Topics("users", "orders", "changes", "segments", "dead")


class _Record:
    def __init__(self, topic: str, offset: int, key: bytes | None, value: bytes) -> None:
        self.topic, self.partition, self.offset = topic, 0, offset
        self.key, self.value, self.headers = key, value, None


def _order_bytes(user_id: int, order_id: int) -> bytes:
    return json.dumps(
        {
            "order_id": order_id,
            "user_id": user_id,
            "status": "Shipped",
            "created_at": "2024-01-01T00:00:00Z",
            "items": [{"product_id": 1, "brand": "A", "category": "B", "sale_price": 1.5}],
        }
    ).encode()


def test_batch_is_grouped_by_user_in_arrival_order_with_rejects_aside() -> None:
    profile = json.dumps(
        {"user_id": 5, "age": 40, "gender": "M", "country": "Spain",
         "traffic_source": "Email", "created_at": "2024-01-01T00:00:00Z"}
    ).encode()  # fmt: skip
    records = [
        _Record("orders", 0, b"5", _order_bytes(5, 1)),
        _Record("orders", 1, b"6", _order_bytes(6, 2)),
        _Record("users", 0, b"5", profile),
        _Record("orders", 2, b"5", b"{oops"),
        _Record("orders", 3, b"5", _order_bytes(5, 3)),
    ]
    parsed = parse_batch(records, TOPICS)
    assert list(parsed.by_user) == [5, 6]
    assert [(s.topic, s.offset) for s, _ in parsed.by_user[5]] == [
        ("orders", 0),
        ("users", 0),
        ("orders", 3),
    ]
    assert isinstance(parsed.by_user[5][1][1], UserEvent)
    assert isinstance(parsed.by_user[5][2][1], OrderEvent)
    assert parsed.reasons == ["not_json"]
    assert parsed.dead_letters[0].value == b"{oops"


def test_poison_records_become_dead_letters_with_their_reason_and_headers() -> None:
    poison = [
        _Record("orders", 0, b"5", _order_bytes(5, 1).replace(b'"A"', b'"\xc3\x28"')),
        _Record("orders", 1, b"5", _order_bytes(5, 2).replace(b'"B"', b'"B", "category": "C"')),
        _Record("orders", 2, b"5", b"[" * 50_000),
    ]
    poison[0].headers = [("segstream-reason", b"forged"), ("trace", b"t")]
    parsed = parse_batch(poison, TOPICS)
    assert parsed.by_user == {}
    assert parsed.reasons == ["not_utf8", "invalid_value", "not_object"]
    first = parsed.dead_letters[0]
    assert read_headers(first.headers)["segstream-reason"] == "not_utf8"
    assert [h for h in first.headers if h[1] in (b"forged", b"t")] == [("trace", b"t")]
    assert [letter.value for letter in parsed.dead_letters] == [r.value for r in poison]


def test_unknown_fields_are_listed_per_record_or_dead_lettered_by_the_setting() -> None:
    coupon = _order_bytes(5, 1).replace(b'"status"', b'"coupon": 1, "status"')
    size = _order_bytes(6, 3).replace(b'"sale_price"', b'"size": 9, "sale_price"')
    records = [
        _Record("orders", 0, b"5", coupon),
        _Record("orders", 1, b"5", _order_bytes(5, 2)),
        _Record("orders", 2, b"6", size),
    ]
    ignored = parse_batch(records, TOPICS)
    assert [s.offset for s, _ in ignored.by_user[5]] == [0, 1] and 6 in ignored.by_user
    assert ignored.unknown == [("orders", ("coupon",)), ("orders", ("items[].size",))]
    assert ignored.dead_letters == []
    refused = parse_batch(records, TOPICS, "dead_letter")
    assert list(refused.by_user) == [5] and refused.unknown == []
    assert refused.reasons == ["unexpected_field", "unexpected_field"]
    details = [read_headers(d.headers)["segstream-detail"] for d in refused.dead_letters]
    assert ["'coupon'" in details[0], "'items[].size'" in details[1]] == [True, True]


def test_a_dead_letter_over_the_limit_keeps_the_longest_prefix_that_fits() -> None:
    small = _Record("orders", 0, b"5", b"{oops")
    huge = _Record("orders", 1, b"5", b"x" * 70_000)
    huge.headers = [("trace", b"t")]
    parsed = parse_batch([small, huge], TOPICS, max_bytes=4096)
    assert parsed.reasons == ["not_json", "too_large"]
    kept, cut = parsed.dead_letters
    assert kept.value == b"{oops"  # within the limit: untouched
    assert record_size(cut.key, cut.value, cut.headers) <= 4096
    assert cut.value is not None and b"x" * len(cut.value) == cut.value
    # the longest prefix: one byte more would not fit
    assert record_size(cut.key, cut.value + b"x", cut.headers) > 4096
    headers = read_headers(cut.headers)
    assert headers["segstream-reason"] == "too_large"
    assert headers["segstream-offset"] == "1"
    assert headers["segstream-original-size"] == "70000"
    assert headers["segstream-truncated"] == "value"
    assert ("trace", b"t") in cut.headers  # the input's headers fit, so they stay
    assert parsed.truncated == [cut]


def test_without_a_limit_dead_letters_keep_every_byte() -> None:
    parsed = parse_batch([_Record("orders", 0, b"5", b"x" * 70_000)], TOPICS)
    assert parsed.dead_letters[0].value == b"x" * 70_000
    assert parsed.truncated == []


def _state(user_id: int, segment: int | None, changes: int = 0, pending: int = 0) -> UserState:
    return UserState(
        user_id, 1, 30, "F", "Japan", "Search", 2, "Zoë", "Jeans",
        segment, None if segment is None else "v1", pending, changes, feature_version=7,
    )  # fmt: skip


def _orders(*user_ids: int) -> dict[int, list[tuple[Source, Event]]]:
    order = OrderEvent(1, 0, "Shipped", "2024-02-02T00:00:00Z", (OrderItem(1, "A", "B", 1.0),))
    return {uid: [(Source("orders", 0, uid), order)] for uid in user_ids}


def test_settles_queue_due_changes_and_reread_pending_ones_only() -> None:
    by_user = _orders(1, 2, 3, 4)
    unassignable = UserState(4, 1, None, None, None, None, 1, "A", "B", None, None, 0)
    states = [_state(1, None), _state(2, 3, changes=1), _state(3, 3, 1, 1), unassignable]
    settles = plan_settles(states, np.array([0, 3, 3]), "v1", by_user)
    assert [(s.user_id, s.change is not None) for s in settles] == [(1, True), (3, False)]
    first = json.loads(settles[0].change or b"")
    assert (first["previous_segment"], first["segment"], first["occurred_at"]) == (
        None,
        0,
        "2024-02-02T00:00:00Z",
    )
    assert first["event_id"] == event_id(1, 1, "v1", Source("orders", 0, 1))
    assert settles[0].updated_at == "2024-02-02T00:00:00Z"
    assert [s.seen_feature_version for s in settles] == [7, 7]
    assert not settles[1].writes


def test_a_new_model_version_alone_stores_the_version_without_an_event() -> None:
    states = [_state(1, 3, changes=2), _state(2, 3, changes=2)]
    settles = plan_settles(states, np.array([3, 4]), "v2", _orders(1, 2))
    kept, moved = settles
    assert (kept.change, kept.writes, kept.updated_at) == (None, True, "")
    assert (kept.seen_segment, kept.seen_model_version) == (3, "v1")
    assert (kept.segment, kept.model_version) == (3, "v2")
    change = json.loads(moved.change or b"")
    assert (change["previous_segment"], change["segment"], change["model_version"]) == (3, 4, "v2")


class TestTombstonesOnUsers:
    """A null value keyed by a user on the users topic is that user leaving."""

    def test_tombstone_on_users_is_the_user_leaving_at_its_kafka_time(self) -> None:
        faust_like = _Record("users", 7, b"42", None)  # type: ignore[arg-type]
        faust_like.timestamp = 1_765_054_800.25  # Faust: seconds, a float
        aiokafka_like = _Record("users", 8, b"43", None)  # type: ignore[arg-type]
        aiokafka_like.timestamp = 1_765_054_800_250  # aiokafka: milliseconds, an int
        parsed = parse_batch([faust_like, aiokafka_like], TOPICS)
        assert parsed.dead_letters == []
        assert parsed.by_user[42] == [
            (Source("users", 0, 7), UserLeft(user_id=42, created_at="2025-12-06T21:00:00.250Z"))
        ]
        assert parsed.by_user[43][0][1] == UserLeft(43, "2025-12-06T21:00:00.250Z")

    def test_tombstone_without_a_user_key_is_dead_lettered(self) -> None:
        records = [
            _Record("users", n, key, None)  # type: ignore[arg-type]
            for n, key in enumerate([None, b"abc", b"007", b"-4", b"9007199254740992"])
        ]
        parsed = parse_batch(records, TOPICS)
        assert parsed.by_user == {}
        assert parsed.reasons == ["key_mismatch"] * 5

    def test_tombstone_on_orders_stays_a_dead_letter(self) -> None:
        parsed = parse_batch([_Record("orders", 0, b"5", None)], TOPICS)  # type: ignore[arg-type]
        assert parsed.reasons == ["not_json"]


def _lost_brand(state: UserState) -> UserState:
    """``state`` after change data capture deleted the user's last branded line."""
    return dataclasses.replace(state, most_frequent_brand=None)


class TestUnassigning:
    """A user with a segment who is no longer assignable gets a row that unassigns them."""

    def test_a_user_who_lost_a_feature_is_unassigned_by_a_change_with_segment_null(self) -> None:
        lost = _lost_brand(_state(2, 3, changes=4))
        states = [_state(1, 3, changes=1), lost]
        kept, row = plan_settles(states, np.array([3]), "v2", _orders(1, 2))
        assert (kept.user_id, kept.change, kept.model_version) == (1, None, "v2")
        assert (row.user_id, row.seen_segment, row.seen_model_version) == (2, 3, "v1")
        assert (row.segment, row.model_version, row.drift_epoch) == (None, None, None)
        assert (row.seen_changes, row.seen_feature_version, row.writes) == (4, 7, True)
        assert row.updated_at == "2024-02-02T00:00:00Z"
        change = json.loads(row.change or b"")
        assert (change["sequence"], change["previous_segment"], change["segment"]) == (5, 3, None)
        assert change["model_version"] == "v2"
        assert change["features"]["most_frequent_brand"] is None
        assert change["event_id"] == event_id(2, 5, "v2", Source("orders", 0, 2))

    def test_in_drift_mode_an_unassigned_user_stores_no_epoch(self) -> None:
        (row,) = plan_settles([_lost_brand(_state(2, 3))], np.array([]), "v1", _orders(2), 4)
        assert row.drift_epoch is None
        assert "drift_epoch" not in json.loads(row.change or b"")

    def test_an_unassigned_user_with_pending_changes_only_reads_them(self) -> None:
        states = [_lost_brand(_state(2, None, changes=5, pending=1)), _lost_brand(_state(3, None))]
        (row,) = plan_settles(states, np.array([]), "v2", _orders(2, 3))
        assert (row.user_id, row.change, row.segment, row.model_version) == (2, None, None, None)
        assert not row.writes

    def test_an_unassigned_user_who_is_assignable_again_changes_from_null(self) -> None:
        (row,) = plan_settles([_state(2, None, changes=5)], np.array([1]), "v2", _orders(2))
        change = json.loads(row.change or b"")
        assert (change["sequence"], change["previous_segment"], change["segment"]) == (6, None, 1)

    def test_segments_must_match_the_assignable_states(self) -> None:
        with pytest.raises(ValueError, match="one per assignable"):
            plan_settles([_state(1, None)], np.array([1, 2]), "v1", _orders(1))
