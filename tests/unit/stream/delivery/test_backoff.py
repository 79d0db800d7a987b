from __future__ import annotations

from email.utils import formatdate

import pytest

from segstream.stream.delivery.backoff import is_retriable, next_delay, retry_after_s


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [next_delay(n, 0.5, 3.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_retry_after_wins_but_is_capped() -> None:
    assert next_delay(1, 0.5, 60.0, retry_after=7.0) == 7.0
    assert next_delay(1, 0.5, 60.0, retry_after=86_400.0) == 60.0


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = 1_700_000_000.0
    assert retry_after_s("12", now) == 12.0
    assert retry_after_s(formatdate(now + 30, usegmt=True), now) == pytest.approx(30.0)
    assert retry_after_s(formatdate(now - 30, usegmt=True), now) == 0.0
    assert retry_after_s("soon", now) is None
    assert retry_after_s(None, now) is None


@pytest.mark.parametrize(
    ("status", "retriable"),
    [
        (None, True),
        (408, True),
        (429, True),
        (500, True),
        (503, True),
        (400, False),
        (401, False),
        (404, False),
        (413, False),
    ],
)
def test_only_failures_a_retry_can_cure_are_retried(status: int | None, retriable: bool) -> None:
    assert is_retriable(status) is retriable
