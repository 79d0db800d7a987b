"""The status page's change feed (pure parts): summaries, order, what is kept."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from segstream.settings import Settings
from segstream.stream.domain.changes import encode_leave
from segstream.stream.domain.events import Source
from segstream.stream.kafka.changefeed import ChangeFeed, parse_change


def change_value(user_id: int, previous: int | None, segment: int) -> bytes:
    return json.dumps(
        {
            "event_id": "0" * 32,
            "user_id": user_id,
            "previous_segment": previous,
            "segment": segment,
            "model_version": "v1",
            "occurred_at": "2024-04-01T10:00:00Z",
            "features": {},
            "source": {"topic": "orders", "partition": 0, "offset": 1},
        }
    ).encode()


@dataclass
class Record:
    """The two fields of a consumer record the feed reads."""

    value: bytes | None
    timestamp: int


def test_change_event_is_summarised() -> None:
    summary = parse_change(change_value(42, None, 3), 1_700_000_000_000)
    assert summary is not None
    assert summary.as_json() == {
        "user_id": 42,
        "previous_segment": None,
        "segment": 3,
        "model_version": "v1",
        "occurred_at": "2024-04-01T10:00:00Z",
        "published_ms": 1_700_000_000_000,
        "drift_epoch": None,
    }


def test_a_drift_mode_change_is_summarised_with_its_drift_epoch() -> None:
    document = {**json.loads(change_value(42, 1, 3)), "drift_epoch": 17}
    summary = parse_change(json.dumps(document).encode(), 5)
    assert summary is not None and summary.drift_epoch == 17
    assert summary.as_json()["drift_epoch"] == 17


@pytest.mark.parametrize("value", [None, b"", b"nope", b"[]", b'{"user_id": 1}'])
def test_values_that_are_not_change_events_are_skipped(value: bytes | None) -> None:
    assert parse_change(value, 0) is None


def test_feed_keeps_the_newest_changes_by_publication_time_newest_first() -> None:
    feed = ChangeFeed(Settings(kafka_bootstrap_servers="127.0.0.1:1"), "changes", keep=3)
    feed._add([Record(change_value(1, None, 0), 10), Record(change_value(2, None, 1), 30)], False)
    feed._add([Record(change_value(3, 0, 2), 20), Record(b"junk", 25)], False)
    feed._add([Record(change_value(4, 1, 2), 40)], True)
    assert [c.user_id for c in feed.recent()] == [4, 2, 3]
    assert [c.user_id for c in feed.recent(2)] == [4, 2]
    # Only live records count towards the rate, not the backlog read at start-up.
    assert feed.rate.total == 1


def test_a_batch_longer_than_keep_leaves_its_newest_and_counts_every_live_record() -> None:
    feed = ChangeFeed(Settings(kafka_bootstrap_servers="127.0.0.1:1"), "changes", keep=2)
    feed._add([Record(change_value(uid, None, 0), 100 + uid) for uid in range(5)], True)
    assert [c.user_id for c in feed.recent()] == [4, 3]
    assert feed.rate.total == 5


def test_a_leave_event_is_not_listed_as_a_segment_change() -> None:
    leave = encode_leave(
        user_id=42, sequence=3, previous_segment=1, model_version="v1",
        occurred_at="2026-12-06T21:00:00.000Z", source=Source("users", 0, 5),
    )  # fmt: skip
    assert parse_change(leave, 5) is None


def test_an_unassigning_change_is_listed_with_no_segment() -> None:
    document = {**json.loads(change_value(42, 3, 0)), "segment": None}
    summary = parse_change(json.dumps(document).encode(), 5)
    assert summary is not None
    assert (summary.previous_segment, summary.segment) == (3, None)
    assert summary.as_json()["segment"] is None
