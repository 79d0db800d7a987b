"""Segment-change decisions, ids and output records, without servers."""

from __future__ import annotations

import json

import jsonschema
import numpy as np

from segstream.errors import EventError
from segstream.stream.domain.batch import parse_batch, plan_settles
from segstream.stream.domain.changes import change_due, encode_change, event_id, user_segment_output
from segstream.stream.domain.dead_letters import HEADER_NAMES, dead_letter, read_headers
from segstream.stream.domain.events import (
    Event,
    OrderEvent,
    OrderItem,
    Source,
    UserEvent,
    load_schema,
)
from segstream.stream.domain.topics import Output, Topics
from segstream.stream.domain.user import UserState

SRC = Source("orders", 2, 41)
FEATURES = {
    "age": 30,
    "gender": "F",
    "country": "Japan",
    "traffic_source": "Search",
    "total_orders": 2,
    "most_frequent_brand": "Zoë",
    "most_frequent_category": "Jeans",
}
TOPICS = Topics("users", "orders", "changes", "segments", "dead")


def _change(**overrides: object) -> bytes:
    fields = {
        "user_id": 9,
        "sequence": 1,
        "previous_segment": None,
        "segment": 3,
        "model_version": "v1",
        "occurred_at": "2024-01-01T00:00:00Z",
        "features": FEATURES,
        "source": SRC,
    }
    fields.update(overrides)
    return encode_change(**fields)  # type: ignore[arg-type]


def test_event_id_is_stable_and_differs_per_change_of_a_user() -> None:
    assert event_id(9, 1, "v1", SRC) == event_id(9, 1, "v1", SRC)
    ids = {event_id(9, n, "v1", SRC) for n in range(1, 50)}
    ids |= {event_id(10, 1, "v1", SRC), event_id(9, 1, "v2", SRC)}
    assert len(ids) == 51
    assert len(event_id(9, 1, "v1", SRC)) == 32


def test_a_change_is_due_for_a_first_assignment_or_another_segment_only() -> None:
    assert change_due(None, 0)
    assert change_due(1, 2)
    assert not change_due(1, 1)


def test_change_event_follows_its_schema_and_is_byte_stable() -> None:
    raw = _change()
    document = json.loads(raw)
    jsonschema.validate(document, load_schema("segment_change"))
    assert raw == _change()
    assert document["source"] == {"topic": "orders", "partition": 2, "offset": 41}
    assert document["features"]["most_frequent_brand"] == "Zoë"
    assert "Zoë".encode() in raw  # UTF-8, not \\u escapes


def test_a_change_is_published_with_its_current_segment_record() -> None:
    change, current = user_segment_output(_change(segment=4), "changes", "segments")
    assert change == Output("changes", b"9", _change(segment=4))
    assert current.topic == "segments" and current.key == b"9"
    value = json.loads(current.value or b"")
    jsonschema.validate(value, load_schema("user_segment"))
    assert value == {
        "user_id": 9,
        "segment": 4,
        "model_version": "v1",
        "updated_at": "2024-01-01T00:00:00Z",
    }


def test_dead_letter_keeps_the_original_bytes_and_says_why_and_where() -> None:
    letter = dead_letter(
        "dead",
        EventError("unknown_status", "status 'Lost'"),
        source_topic="orders",
        partition=3,
        offset=77,
        key=None,
        value=b"\xff raw",
        headers=[("trace", b"abc")],
    )
    assert (letter.topic, letter.key, letter.value) == ("dead", None, b"\xff raw")
    assert [name for name, _ in letter.headers] == [*HEADER_NAMES, "trace"]
    assert read_headers(letter.headers) == {
        "reason": "unknown_status",
        "detail": "status 'Lost'",
        "source_topic": "orders",
        "source_partition": "3",
        "source_offset": "77",
    }


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


def test_next_change_of_a_user_gets_the_next_sequence_number() -> None:
    order = OrderEvent(1, 0, "Shipped", "2024-02-02T00:00:00Z", (OrderItem(1, "A", "B", 1.0),))
    source = Source("orders", 0, 8)
    (settle,) = plan_settles([_state(2, 3, changes=4)], np.array([1]), "v1", {2: [(source, order)]})
    assert settle.seen_changes == 4
    assert json.loads(settle.change or b"")["event_id"] == event_id(2, 5, "v1", source)
