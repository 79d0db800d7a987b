"""The knee method on synthetic SSE curves whose knee is known."""

from __future__ import annotations

import numpy as np
import pytest

from segstream.training.knee import find_knee

KS = list(range(2, 11))


def test_sharp_elbow_is_found_where_the_curve_bends() -> None:
    # Falls steeply until k=5, then nearly flat: the elbow is at 5.
    sse = [1000, 700, 400, 100, 90, 80, 70, 60, 50]
    assert find_knee(KS, sse) == 5


@pytest.mark.parametrize("knee", [3, 4, 6, 7])
def test_piecewise_linear_curve_has_its_knee_at_the_break(knee: int) -> None:
    sse = [
        100.0 - 30.0 * (k - 2) if k <= knee else 100.0 - 30.0 * (knee - 2) - (k - knee) for k in KS
    ]
    assert find_knee(KS, sse) == knee


def test_inverse_curve_knee_is_independent_of_scale() -> None:
    sse = [1.0 / k for k in KS]
    assert find_knee(KS, sse) == find_knee(KS, [1e6 * s for s in sse])
    assert find_knee(KS, sse) == 4  # 1/k on 2..10: farthest below the chord at k=4


def test_straight_line_has_no_knee_and_gives_the_smallest_k() -> None:
    assert find_knee(KS, [100.0 - 10 * k for k in KS]) == 2


def test_flat_curve_gives_the_smallest_k() -> None:
    assert find_knee(KS, [5.0] * len(KS)) == 2


def test_concave_curve_has_no_knee() -> None:
    assert find_knee(KS, [100.0 - k**2 for k in KS]) == 2


def test_noisy_elbow_is_still_found() -> None:
    rng = np.random.default_rng(3)
    base = np.array([1000, 600, 250, 100, 95, 90, 85, 80, 75], dtype=float)
    assert find_knee(KS, base + rng.normal(0, 2, base.size)) == 5


def test_tie_between_two_points_goes_to_the_smaller_k() -> None:
    # Normalised: 1, .5, .25, .2, 0 against the chord 1, .75, .5, .25, 0: k=3 and k=4 are
    # both exactly 0.25 below it.
    sse = [4.0, 2.0, 1.0, 0.8, 0.0]
    assert find_knee([2, 3, 4, 5, 6], sse) == 3


def test_fewer_than_three_points_give_the_first_k() -> None:
    assert find_knee([2, 3], [10.0, 1.0]) == 2


@pytest.mark.parametrize(
    ("ks", "sse"),
    [([], []), ([2, 3], [1.0]), ([3, 2, 4], [3.0, 2.0, 1.0]), ([2, 3, 4], [1.0, np.nan, 0.0])],
)
def test_malformed_curves_are_rejected(ks: list[int], sse: list[float]) -> None:
    with pytest.raises(ValueError):
        find_knee(ks, sse)
