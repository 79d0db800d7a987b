from __future__ import annotations

import json

import pytest

from segstream.stream.delivery.payload import batch_body, batch_key, change_event, snapshot_event
from segstream.stream.domain.changes import encode_change
from segstream.stream.domain.events import Source

SOURCE = Source("orders", 1, 42)


def _change(sequence: int, segment: int) -> bytes:
    return encode_change(
        user_id=7,
        sequence=sequence,
        previous_segment=None,
        segment=segment,
        model_version="v1",
        occurred_at="2024-01-01T00:00:00Z",
        features={"n": 1},
        source=SOURCE,
    )


def test_a_change_becomes_an_event_keyed_by_its_event_id() -> None:
    raw = _change(3, 2)
    event = change_event(raw)
    assert event.idempotency_key == json.loads(raw)["event_id"]
    assert (event.kind, event.user_id, event.sequence, event.segment) == ("segment_change", 7, 3, 2)
    assert event.raw == raw


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b'{"user_id": 1}'])
def test_a_record_that_is_no_change_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        change_event(raw)


def test_the_body_lists_events_in_order_and_the_key_follows_them() -> None:
    events = [change_event(_change(1, 0)), change_event(_change(2, 1))]
    body = json.loads(batch_body(events))
    assert [e["sequence"] for e in body["events"]] == [1, 2]
    assert set(body["events"][0]) == {
        "kind",
        "idempotency_key",
        "user_id",
        "sequence",
        "segment",
        "previous_segment",
        "model_version",
        "occurred_at",
    }
    assert batch_key(events) == batch_key(list(events))
    assert batch_key(events) != batch_key(events[::-1])


def test_a_snapshot_is_keyed_by_user_and_sequence() -> None:
    event = snapshot_event(7, 3, 2, "v1", "2024-01-01T00:00:00Z")
    assert (event.kind, event.idempotency_key) == ("snapshot", "snapshot-7-3")


def test_bodies_match_the_published_json_schema() -> None:
    import jsonschema

    from segstream.stream.domain.events import load_schema

    events = [change_event(_change(1, 0)), snapshot_event(7, 3, 2, "v1", "2024-01-01T00:00:00Z")]
    jsonschema.Draft202012Validator(load_schema("delivery_batch")).validate(
        json.loads(batch_body(events))
    )


def test_a_leave_becomes_a_user_left_event_without_a_segment() -> None:
    raw = json.dumps(
        {
            "event_id": "e" * 32,
            "user_id": 7,
            "sequence": 4,
            "left": True,
            "previous_segment": 2,
            "model_version": "v1",
            "occurred_at": "2024-01-02T00:00:00Z",
            "source": {"topic": "users", "partition": 0, "offset": 9},
        }
    ).encode()
    event = change_event(raw)
    assert (event.kind, event.sequence, event.segment, event.previous_segment) == (
        "user_left",
        4,
        None,
        2,
    )
    import jsonschema

    from segstream.stream.domain.events import load_schema

    jsonschema.Draft202012Validator(load_schema("delivery_batch")).validate(
        json.loads(batch_body([event]))
    )


def test_an_unassigning_change_is_a_segment_change_with_a_null_segment() -> None:
    import jsonschema

    from segstream.stream.domain.events import load_schema

    raw = encode_change(
        user_id=7,
        sequence=5,
        previous_segment=2,
        segment=None,
        model_version="v1",
        occurred_at="2024-01-01T00:00:00Z",
        features={"n": 0},
        source=SOURCE,
    )
    event = change_event(raw)
    assert (event.kind, event.sequence, event.segment, event.previous_segment) == (
        "segment_change",
        5,
        None,
        2,
    )
    jsonschema.Draft202012Validator(load_schema("delivery_batch")).validate(
        json.loads(batch_body([event]))
    )
