"""Segment-change decisions, event ids and output records, without servers."""

from __future__ import annotations

import json

import jsonschema
import numpy as np

from segstream.stream.domain.batch import plan_settles
from segstream.stream.domain.changes import change_due, encode_change, event_id, user_segment_output
from segstream.stream.domain.events import (
    OrderEvent,
    OrderItem,
    Source,
    load_schema,
)
from segstream.stream.domain.topics import Output
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


def _state(user_id: int, segment: int | None, changes: int = 0, pending: int = 0) -> UserState:
    return UserState(
        user_id, 1, 30, "F", "Japan", "Search", 2, "Zoë", "Jeans",
        segment, None if segment is None else "v1", pending, changes, feature_version=7,
    )  # fmt: skip


def test_next_change_of_a_user_gets_the_next_sequence_number() -> None:
    order = OrderEvent(1, 0, "Shipped", "2024-02-02T00:00:00Z", (OrderItem(1, "A", "B", 1.0),))
    source = Source("orders", 0, 8)
    (settle,) = plan_settles([_state(2, 3, changes=4)], np.array([1]), "v1", {2: [(source, order)]})
    assert settle.seen_changes == 4
    assert json.loads(settle.change or b"")["event_id"] == event_id(2, 5, "v1", source)
