"""Group throughput figures of the status page, from offset samples."""

from __future__ import annotations

import pytest

from segstream.stream.http.live import offset_rates


def test_offset_rates_need_two_samples_half_a_second_apart() -> None:
    assert offset_rates([]) == (None, None)
    assert offset_rates([(0.0, 0, 0), (0.2, 10, 10)]) == (None, None)


def test_offset_rates_use_the_window_only() -> None:
    history = [(0.0, 0, 0), (50.0, 100, 200), (55.0, 150, 260), (60.0, 200, 300)]
    processed, produced = offset_rates(history, window_s=10.0)
    assert processed == pytest.approx(10.0)
    assert produced == pytest.approx(10.0)


def test_offsets_going_backwards_give_zero_not_negative_rates() -> None:
    assert offset_rates([(0.0, 500, 500), (2.0, 10, 20)]) == (0.0, 0.0)
