"""Drift mode's pure part: river's rule from given centres, the codec, the drifted model."""

from __future__ import annotations

import numpy as np
import pytest
import redis.asyncio as aioredis

from segstream.settings import load_settings
from segstream.stream.drift.centroids import (
    Centroids,
    Epoch,
    decode_centers,
    drift_distances,
    drifted_model,
    encode_centers,
    learn_deltas,
)
from segstream.stream.drift.shared import shared_drift
from segstream.training.artifact import Model
from segstream.training.assign import assign, nearest


def test_a_point_moves_only_its_nearest_centre_by_the_learning_rate() -> None:
    centers = np.array([[0.0, 0.0], [10.0, 10.0]])
    deltas = learn_deltas(centers, np.array([[2.0, 0.0], [2.0, 0.0]]), learning_rate=0.5)
    # 0 -> 1 (half way to 2) -> 1.5 (half way again); the far centre does not move.
    np.testing.assert_array_equal(deltas, [[1.5, 0.0], [0.0, 0.0]])


def test_a_point_halfway_between_two_centres_moves_the_lower_numbered_one() -> None:
    centers = np.array([[-1.0, 0.0], [1.0, 0.0]])
    deltas = learn_deltas(centers, np.array([[0.0, 0.0]]), learning_rate=0.5)
    np.testing.assert_array_equal(deltas, [[0.5, 0.0], [0.0, 0.0]])


def test_learning_follows_the_moving_centres_within_a_batch() -> None:
    # The second point is nearer centre 1 at first, but nearer centre 0 once it moved.
    centers = np.array([[0.0, 0.0], [4.0, 0.0]])
    deltas = learn_deltas(centers, np.array([[3.0, 0.0], [2.2, 0.0]]), learning_rate=1.0)
    np.testing.assert_allclose(deltas, [[0.0, 0.0], [-1.8, 0.0]])


def test_centres_converge_to_a_shifted_population() -> None:
    rng = np.random.default_rng(3)
    centers = np.array([[-2.0, 0.0], [2.0, 0.0]])
    true = np.array([[-1.0, 1.5], [3.0, -0.5]])
    points = true[rng.integers(0, 2, 4_000)] + rng.normal(0, 0.3, (4_000, 2))
    moved = centers + learn_deltas(centers, points, learning_rate=0.02)
    assert drift_distances(centers, true).min() > 1.0
    assert drift_distances(moved, true).max() < 0.1


def test_no_points_no_move() -> None:
    centers = np.array([[0.5, 0.25], [1.0, 2.0]])
    assert not learn_deltas(centers, np.empty((0, 2)), 0.1).any()


def test_centres_round_trip_through_their_text_exactly() -> None:
    values = np.random.default_rng(0).normal(0, 1e3, (5, 2))
    values[0, 0], values[0, 1] = 1e-300, -0.1
    text = encode_centers(values)
    np.testing.assert_array_equal(decode_centers(text, 5), values)
    np.testing.assert_array_equal(decode_centers(text.encode(), 5), values)


def test_decoding_the_wrong_number_of_coordinates_fails() -> None:
    with pytest.raises(ValueError, match="expected 6 coordinates, got 4"):
        decode_centers("1 2 3 4", 3)


def test_drifted_model_assigns_with_the_new_centres_through_the_one_assign(model: Model) -> None:
    moved = model.centers + np.array([[2.0, 0.0], [0.0, 0.0], [0.0, -1.5]])
    drifted = drifted_model(model, moved)
    features = {
        "age": [20, 70, 45, 33],
        "gender": ["F", "M", "F", "M"],
        "country": ["Japan", "China", "Brasil", "Japan"],
        "traffic_source": ["Search", "Email", "Search", "Search"],
        "total_orders": [1, 4, 2, 1],
        "most_frequent_brand": ["Zara", "Alpha", "Zara", "Alpha"],
        "most_frequent_category": ["Jeans", "Tops", "Tops", "Jeans"],
    }
    result = assign(drifted, features)
    np.testing.assert_array_equal(drifted.centers, moved)
    assert drifted.version == model.version
    np.testing.assert_array_equal(result.segments, nearest(moved, result.components)[0])
    np.testing.assert_array_equal(result.components, assign(model, features).components)
    assert (result.segments != assign(model, features).segments).any(), "centres did not matter"


def test_unmoved_centres_give_back_the_model_itself(model: Model) -> None:
    assert drifted_model(model, model.centers.copy()) is model


def test_drifted_centres_must_fit_the_model(model: Model) -> None:
    with pytest.raises(ValueError, match="must be"):
        drifted_model(model, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="must be"):
        drifted_model(model, np.full((3, 2), np.nan))


def test_trained_centroids_are_version_zero_and_read_only(model: Model) -> None:
    state = Centroids.trained(model)
    assert (state.version, state.learned, state.model_version) == (0, 0, "v1")
    np.testing.assert_array_equal(state.centers, model.centers)
    with pytest.raises(ValueError):
        state.centers[0, 0] = 5.0


def test_drift_is_off_by_default_and_river_uses_the_configured_rate_and_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SEGSTREAM_DRIFT", raising=False)
    client = aioredis.Redis()  # never connected: building the objects needs no server
    assert load_settings().drift == "off"
    assert shared_drift(load_settings(), client, "app:") is None
    settings = load_settings(drift="river", drift_learning_rate=0.05, drift_max_distance=0.75)
    drift = shared_drift(settings, client, "app:")
    assert drift is not None
    assert (drift.learning_rate, drift.max_distance, drift.store.prefix) == (0.05, 0.75, "app:")


def test_epoch_zero_is_the_trained_centres_and_an_epoch_cannot_be_changed(model: Model) -> None:
    epoch = Epoch.trained(model)
    assert (epoch.model_version, epoch.number) == (model.version, 0)
    np.testing.assert_array_equal(epoch.centers, model.centers)
    with pytest.raises(ValueError):
        epoch.centers[0, 0] = 1.0
    state = Centroids.trained(model)
    assert state.epoch.number == 0 and state.version == 0
