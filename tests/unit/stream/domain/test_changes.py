"""Segment-change decisions, event ids and output records, without servers."""

from __future__ import annotations

import json

import jsonschema
import msgspec
import numpy as np
import pytest

from segstream.stream.domain.batch import plan_settles
from segstream.stream.domain.changes import (
    change_due,
    change_sequence,
    current_segment,
    encode_change,
    ends_segment,
    event_id,
    outbox_outputs,
)
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
    assert document["sequence"] == 1
    assert document["features"]["most_frequent_brand"] == "Zoë"
    assert "Zoë".encode() in raw  # UTF-8, not \\u escapes


def test_a_change_is_published_with_its_current_segment_record() -> None:
    change, current = outbox_outputs({9: [_change(segment=4)]}, "changes", "segments")
    assert change == Output("changes", b"9", _change(segment=4))
    assert current.topic == "segments" and current.key == b"9"
    value = json.loads(current.value or b"")
    jsonschema.validate(value, load_schema("user_segment"))
    assert value == {
        "user_id": 9,
        "sequence": 1,
        "segment": 4,
        "model_version": "v1",
        "updated_at": "2024-01-01T00:00:00Z",
    }


def test_every_pending_change_is_published_but_only_the_newest_is_the_current_segment() -> None:
    mine = [
        _change(sequence=n, segment=n, occurred_at=f"2024-01-0{n}T00:00:00Z") for n in (3, 4, 5)
    ]
    other = [_change(user_id=10, sequence=1, segment=0)]
    outputs = outbox_outputs({9: mine, 10: other, 11: []}, "changes", "segments")
    assert [o.value for o in outputs if o.topic == "changes"] == [*mine, *other]
    current = {o.key: json.loads(o.value or b"") for o in outputs if o.topic == "segments"}
    assert [o.key for o in outputs if o.topic == "segments"] == [b"9", b"10"]
    assert current[b"9"] == {
        "user_id": 9,
        "sequence": 5,
        "segment": 5,
        "model_version": "v1",
        "updated_at": "2024-01-05T00:00:00Z",
    }
    assert (current[b"10"]["sequence"], current[b"10"]["segment"]) == (1, 0)


def test_the_last_current_segment_of_a_user_is_its_newest_change() -> None:
    # Two writers publish one user's outbox: one read it before change 3 was queued.
    changes = [_change(sequence=n, segment=n) for n in (1, 2, 3)]
    early = outbox_outputs({9: changes[:2]}, "changes", "segments")
    late = outbox_outputs({9: changes}, "changes", "segments")
    landed = [o for o in late + early if o.topic == "segments"]  # the older lands last
    assert [json.loads(o.value or b"")["sequence"] for o in landed] == [3, 2]
    # The documented consumer rule: keep the value with the highest sequence per user.
    kept: dict[bytes | None, dict[str, int]] = {}
    for record in landed:
        value = json.loads(record.value or b"")
        if record.key not in kept or value["sequence"] > kept[record.key]["sequence"]:
            kept[record.key] = value
    assert kept[b"9"]["segment"] == 3


def test_a_change_queued_before_sequences_finds_its_sequence_in_its_event_id() -> None:
    for sequence in (1, 7, 250):
        document = json.loads(_change(sequence=sequence))
        del document["sequence"]
        legacy = msgspec.json.encode(document)
        assert change_sequence(document) == sequence
        assert json.loads(current_segment(legacy))["sequence"] == sequence


def test_what_is_not_a_change_event_is_refused_with_a_value_error() -> None:
    forged = json.loads(_change())
    del forged["sequence"]
    forged["event_id"] = "0" * 32
    for raw in (b"[1]", b'{"user_id": 9}', msgspec.json.encode(forged), b"not json"):
        with pytest.raises(ValueError):
            current_segment(raw)


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


def test_without_drift_a_change_has_no_drift_epoch_key_and_its_bytes_are_unchanged() -> None:
    raw = _change()
    assert b"drift_epoch" not in raw
    assert list(json.loads(raw)) == [
        "event_id", "user_id", "sequence", "previous_segment", "segment", "model_version",
        "occurred_at", "features", "source",
    ]  # fmt: skip
    assert b"drift_epoch" not in current_segment(raw)


def test_a_drift_mode_change_and_its_current_segment_carry_the_drift_epoch() -> None:
    raw = _change(drift_epoch=12)
    document = json.loads(raw)
    jsonschema.validate(document, load_schema("segment_change"))
    assert list(document)[5:7] == ["model_version", "drift_epoch"]
    assert (document["model_version"], document["drift_epoch"]) == ("v1", 12)
    assert document["event_id"] == json.loads(_change())["event_id"]  # the id does not move
    current = json.loads(current_segment(raw))
    jsonschema.validate(current, load_schema("user_segment"))
    assert current == {
        "user_id": 9,
        "sequence": 1,
        "segment": 3,
        "model_version": "v1",
        "drift_epoch": 12,
        "updated_at": "2024-01-01T00:00:00Z",
    }


def test_a_negative_drift_epoch_breaks_the_schema() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(_change(drift_epoch=-1)), load_schema("segment_change"))


def test_in_drift_mode_every_assigned_user_stores_its_epoch_even_keeping_its_segment() -> None:
    order = OrderEvent(1, 0, "Shipped", "2024-02-02T00:00:00Z", (OrderItem(1, "A", "B", 1.0),))
    source = Source("orders", 0, 8)
    states = [_state(2, 3, changes=4), _state(5, 1, changes=2)]
    by_user = {2: [(source, order)], 5: [(source, order)]}
    moved, kept = plan_settles(states, np.array([1, 1]), "v1", by_user, drift_epoch=9)
    assert moved.change is not None and json.loads(moved.change)["drift_epoch"] == 9
    assert moved.drift_epoch == 9
    # Same segment, same model version: no event, but a row that stores the epoch.
    assert kept.change is None and kept.drift_epoch == 9 and kept.writes
    assert (kept.segment, kept.model_version) == (1, "v1")
    # Without drift the same user needs no row at all.
    assert plan_settles(states[1:], np.array([1]), "v1", {5: by_user[5]}) == []


class TestUnassigning:
    """A user with a segment who loses a feature (change data capture) is unassigned."""

    def test_a_change_is_due_when_a_segment_is_lost_and_not_when_none_stays_none(self) -> None:
        assert change_due(3, None)
        assert not change_due(None, None)

    def test_a_null_segment_follows_the_schema_with_the_features_the_user_has(self) -> None:
        features = {**FEATURES, "most_frequent_brand": None, "total_orders": 0}
        document = json.loads(
            _change(sequence=2, previous_segment=3, segment=None, features=features)
        )
        jsonschema.validate(document, load_schema("segment_change"))
        assert (document["previous_segment"], document["segment"]) == (3, None)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**document, "segment": -1}, load_schema("segment_change"))

    def test_an_unassigning_change_is_published_with_a_tombstone(self) -> None:
        gone = _change(sequence=2, previous_segment=3, segment=None)
        outputs = outbox_outputs({9: [_change(), gone]}, "changes", "segments")
        assert outputs == [
            Output("changes", b"9", _change()),
            Output("changes", b"9", gone),
            Output("segments", b"9", None),
        ]
        assert ends_segment(json.loads(gone)) and not ends_segment(json.loads(_change()))

    def test_a_segment_after_an_unassign_is_a_change_from_null_with_its_current_value(self) -> None:
        back = _change(sequence=3, previous_segment=None, segment=5)
        gone = _change(sequence=2, previous_segment=3, segment=None)
        *_, current = outbox_outputs({9: [gone, back]}, "changes", "segments")
        assert current.value is not None
        assert json.loads(current.value)["segment"] == 5
