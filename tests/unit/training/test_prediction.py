"""The users most like a new customer: the nearest in the model's component space."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segstream.training.prediction import SIMILAR_COLUMNS, similar_users


def _reference(points: dict[int, tuple[float, float, int]]) -> pd.DataFrame:
    """user_id -> (component_1, component_2, segment), as assignments.parquet holds them."""
    ids = list(points)
    return pd.DataFrame(
        {
            "user_id": np.array(ids, dtype=np.int64),
            "segment": np.array([points[u][2] for u in ids], dtype=np.int64),
            "component_1": [points[u][0] for u in ids],
            "component_2": [points[u][1] for u in ids],
        }
    )


def test_nearest_users_are_the_closest_points_not_the_same_direction() -> None:
    # The query (1, 0). Users 1 and 2 point exactly its way (cosine 1.0) but lie far out, in
    # another segment; users 3 and 4 are close beside it at an angle (cosine < 1).
    reference = _reference(
        {
            1: (3.0, 0.0, 1),  # distance 2.0, cosine 1.0
            2: (0.2, 0.0, 1),  # distance 0.8, cosine 1.0
            3: (1.0, 0.3, 0),  # distance 0.3, cosine 0.958
            4: (0.9, -0.1, 0),  # distance 0.141, cosine 0.994
            5: (-1.0, 0.0, 2),  # distance 2.0, cosine -1.0
        }
    )
    query = np.array([1.0, 0.0])
    cosine_order = [1, 2, 4, 3]  # what the notebook's cosine similarity ranked first
    similar = similar_users(query, reference, top=4)
    assert list(similar.columns) == list(SIMILAR_COLUMNS)
    assert similar["user_id"].tolist() == [4, 3, 2, 1] != cosine_order
    assert similar["distance"].tolist() == pytest.approx([np.hypot(0.1, 0.1), 0.3, 0.8, 2.0])
    assert similar["segment"].tolist() == [0, 0, 1, 1]


def test_equal_distances_go_to_the_smaller_user_id_also_at_the_cut() -> None:
    # Four users on the unit circle round the origin, one at the centre; top=3 cuts the tie.
    reference = _reference(
        {40: (0.0, 1.0, 0), 7: (1.0, 0.0, 0), 22: (-1.0, 0.0, 0), 3: (0.0, -1.0, 0), 9: (0, 0, 0)}
    )
    similar = similar_users(np.zeros(2), reference, top=3)
    assert similar["user_id"].tolist() == [9, 3, 7]
    assert similar["distance"].tolist() == [0.0, 1.0, 1.0]


def test_top_larger_than_the_reference_returns_everyone_and_zero_returns_no_one() -> None:
    reference = _reference({1: (0.0, 2.0, 0), 2: (0.0, 1.0, 1)})
    assert similar_users(np.zeros(2), reference, top=10)["user_id"].tolist() == [2, 1]
    empty = similar_users(np.zeros(2), reference, top=0)
    assert empty.empty and list(empty.columns) == list(SIMILAR_COLUMNS)


def test_matches_a_full_sort_on_many_random_users() -> None:
    rng = np.random.default_rng(3)
    n = 50_000
    # Rounded coordinates: many exact ties, so the partition's cut is exercised.
    points = np.round(rng.normal(size=(n, 2)), 1)
    reference = pd.DataFrame(
        {
            "user_id": rng.permutation(n).astype(np.int64) + 1,
            "segment": rng.integers(0, 4, n),
            "component_1": points[:, 0],
            "component_2": points[:, 1],
        }
    )
    query = np.array([0.3, -0.2])
    similar = similar_users(query, reference, top=25)
    distance = np.hypot(points[:, 0] - 0.3, points[:, 1] + 0.2)
    expected = np.lexsort((reference["user_id"].to_numpy(), distance))[:25]
    assert similar["user_id"].tolist() == reference["user_id"].to_numpy()[expected].tolist()
