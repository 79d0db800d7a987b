"""Lag figures from offsets and timestamps (pure): messages pending and seconds behind."""

from __future__ import annotations

import pytest

from segstream.stream.kafka.lag import LagSnapshot, partition_lag


def lag(**kwargs: object):
    values = {"committed": 10, "start": 0, "end": 10, "first_pending_ms": None, "now_ms": 50_000}
    values.update(kwargs)
    return partition_lag("orders", 3, **values)  # type: ignore[arg-type]


def test_caught_up_partition_has_no_lag_and_zero_seconds() -> None:
    p = lag(committed=10, end=10)
    assert (p.lag, p.seconds_behind) == (0, 0.0)


def test_pending_records_are_end_minus_committed_and_aged_by_the_first_pending() -> None:
    p = lag(committed=7, end=19, first_pending_ms=47_500, now_ms=50_000)
    assert p.lag == 12
    assert p.seconds_behind == pytest.approx(2.5)


@pytest.mark.parametrize("committed", [None, -1])
def test_a_group_that_never_committed_resumes_at_the_log_start(committed: int | None) -> None:
    p = lag(committed=committed, start=4, end=9, first_pending_ms=49_000)
    assert p.committed is None
    assert p.lag == 5


def test_records_deleted_by_retention_are_not_counted_as_pending() -> None:
    assert lag(committed=2, start=6, end=9, first_pending_ms=1).lag == 3


def test_a_committed_offset_past_the_end_is_no_lag() -> None:
    assert lag(committed=12, end=10).lag == 0


def test_unreadable_first_pending_record_gives_unknown_seconds() -> None:
    p = lag(committed=3, end=9, first_pending_ms=None)
    assert p.lag == 6
    assert p.seconds_behind is None


def test_a_record_stamped_in_the_future_is_zero_seconds_old() -> None:
    assert lag(committed=3, end=9, first_pending_ms=51_000, now_ms=50_000).seconds_behind == 0.0


def test_snapshot_totals_and_worst_age() -> None:
    parts = (
        lag(committed=3, end=9, first_pending_ms=40_000),
        lag(committed=5, end=6, first_pending_ms=45_000),
        lag(committed=9, end=9),
    )
    snapshot = LagSnapshot("g", 0.0, parts)
    assert snapshot.total_lag == 7
    assert snapshot.max_seconds_behind == pytest.approx(10.0)
    assert snapshot.committed_total == 17


def test_snapshot_worst_age_is_unknown_when_one_partition_is() -> None:
    parts = (lag(committed=3, end=9, first_pending_ms=40_000), lag(committed=3, end=9))
    assert LagSnapshot("g", 0.0, parts).max_seconds_behind is None


def test_empty_snapshot_is_caught_up() -> None:
    snapshot = LagSnapshot("g", 0.0, ())
    assert (snapshot.total_lag, snapshot.max_seconds_behind) == (0, 0.0)
