"""Fitting: ids are never features, k is validated, the knee picks auto k, seeds reproduce."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segstream.errors import DataError
from segstream.training.knee import find_knee
from segstream.training.train import (
    K_RANGE,
    MIN_USERS,
    TrainConfig,
    TrainResult,
    clean_features,
    fit,
)

QUICK = {"silhouette_sample": 500}


def test_user_ids_are_never_features(small_features: pd.DataFrame) -> None:
    """The notebook's scaler and PCA saw USER_ID; here renumbering users changes nothing."""
    config = TrainConfig(k=4, k_values=(4,), **QUICK)
    original = fit(small_features, config)
    renumbered = small_features.assign(user_id=small_features["user_id"] * 1_000 + 987_654_321)
    again = fit(renumbered, config)
    for name in ("scaler_mean", "scaler_scale", "pca_mean", "pca_components", "centers"):
        np.testing.assert_array_equal(getattr(again.model, name), getattr(original.model, name))
    np.testing.assert_array_equal(again.segments, original.segments)
    assert original.model.scaler_mean.shape == (7,)
    assert "user_id" not in original.model.feature_columns


def test_same_data_and_seed_give_the_same_model(small_features: pd.DataFrame) -> None:
    config = TrainConfig(k=3, k_values=(3,), **QUICK)
    first, second = fit(small_features, config), fit(small_features, config)
    np.testing.assert_array_equal(first.model.centers, second.model.centers)
    assert first.model.data_fingerprint == second.model.data_fingerprint


def test_auto_k_is_the_knee_of_the_recorded_sse_curve(small_features: pd.DataFrame) -> None:
    result = fit(small_features, TrainConfig(**QUICK))
    model = result.model
    assert model.k_values == tuple(range(2, 11))
    assert model.k == find_knee(model.k_values, model.sse)
    assert model.k_selection.startswith(f"auto k={model.k}")
    assert all(a > b for a, b in zip(model.sse, model.sse[1:], strict=False))
    assert all(-1 <= s <= 1 for s in model.silhouette)


def test_elbow_runs_over_two_to_ten_with_the_chosen_k_fit_kept(small_fit: TrainResult) -> None:
    model = small_fit.model
    assert model.k == 4 and model.centers.shape == (4, 2)
    assert np.bincount(small_fit.segments, minlength=4).min() > 0
    assert model.extra["n_init"] == 10 and model.extra["max_iter"] == 300


@pytest.mark.parametrize("k", [0, 1, 11])
def test_k_outside_two_to_ten_is_refused(k: int) -> None:
    with pytest.raises(DataError, match="between 2 and 10"):
        TrainConfig(k=k)


def test_too_few_distinct_rows_for_k_is_refused(small_features: pd.DataFrame) -> None:
    # 20 users, but only 4 different feature rows: k=5 cannot be fitted.
    repeated = pd.concat([small_features.head(4)] * 5, ignore_index=True)
    repeated["user_id"] = range(1, len(repeated) + 1)
    with pytest.raises(DataError, match="too few rows for k=5: only 4 distinct points"):
        fit(repeated, TrainConfig(k=5, **QUICK))


@pytest.mark.parametrize("users", [1, 4, MIN_USERS - 1])
def test_fewer_users_than_a_silhouette_for_every_k_needs_are_refused(
    small_features: pd.DataFrame, users: int
) -> None:
    with pytest.raises(DataError, match=f"too few users to segment: {users} with every feature"):
        fit(small_features.head(users), TrainConfig(**QUICK))


def test_the_fewest_users_allowed_give_a_silhouette_for_every_k(
    small_features: pd.DataFrame,
) -> None:
    result = fit(small_features.head(MIN_USERS), TrainConfig(**QUICK))
    assert result.model.k_values == tuple(K_RANGE)
    assert all(np.isfinite(result.model.silhouette))


def test_users_dropped_for_missing_values_are_named_in_the_refusal(
    small_features: pd.DataFrame,
) -> None:
    frame = small_features.head(MIN_USERS).copy()
    frame.loc[0, "country"] = None
    with pytest.raises(DataError, match=r"10 with every feature \(1 more dropped"):
        fit(frame, TrainConfig(**QUICK))


def test_empty_data_is_refused(small_features: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="no training rows"):
        fit(small_features.head(0), TrainConfig(**QUICK))


def test_rows_with_missing_values_are_dropped_and_counted(small_features: pd.DataFrame) -> None:
    frame = small_features.head(200).copy()
    frame.loc[3, "country"] = None
    frame.loc[5, "most_frequent_brand"] = ""
    frame.loc[8, "age"] = np.nan
    kept, dropped = clean_features(frame)
    assert dropped == 3 and len(kept) == 197
    assert not kept["user_id"].isin(frame.loc[[3, 5, 8], "user_id"]).any()


def test_a_missing_feature_column_is_refused(small_features: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="lacks columns"):
        fit(small_features.drop(columns=["country"]), TrainConfig(**QUICK))


def test_duplicate_users_are_refused(small_features: pd.DataFrame) -> None:
    doubled = pd.concat([small_features.head(50), small_features.head(50)])
    with pytest.raises(DataError, match="user_id repeats"):
        fit(doubled, TrainConfig(**QUICK))


def test_fallback_is_the_most_frequent_training_value(small_fit: TrainResult) -> None:
    counts = small_fit.features["traffic_source"].value_counts()
    assert small_fit.model.fallbacks["traffic_source"] == counts.index[0] == "Search"
