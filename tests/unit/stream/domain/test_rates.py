"""Rolling rates over whole seconds of a window."""

from __future__ import annotations

import pytest

from segstream.stream.domain.rates import RollingCounter


class FakeClock:
    """A settable monotonic clock (time is plain data here, not a client)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rolling_rate_averages_whole_seconds_of_the_window() -> None:
    clock = FakeClock(1000.0)
    counter = RollingCounter(clock=clock)
    clock.now = 1020.0  # the counter is older than the window
    for second in range(10):
        clock.now = 1020.0 + second
        counter.add(30)
    clock.now = 1030.5
    assert counter.rate(10) == pytest.approx(30.0)
    assert counter.total == 300


def test_rolling_rate_drops_counts_older_than_the_window() -> None:
    clock = FakeClock(0.0)
    counter = RollingCounter(clock=clock)
    counter.add(1000)
    clock.now = 100.0
    counter.add(10)
    clock.now = 101.2
    assert counter.rate(10) == pytest.approx(1.0)


def test_rolling_rate_of_a_young_counter_is_averaged_over_its_age() -> None:
    clock = FakeClock(50.0)
    counter = RollingCounter(clock=clock)
    counter.add(10)
    clock.now = 51.0
    counter.add(10)
    clock.now = 52.0
    assert counter.rate(10) == pytest.approx(10.0)
