"""THE assign: sklearn's labels exactly (also renumbered), the same floats for a row alone or in any
batch (near-ties included), stored vocabularies, unseen flagged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.preprocessing import LabelEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from segstream.errors import DataError, ModelMismatchError
from segstream.training.align import align
from segstream.training.artifact import Model
from segstream.training.assign import Assignment, assign, encode, encode_with_flags, nearest
from segstream.training.data import DataSource, read_features
from segstream.training.features import CATEGORICAL_COLUMNS, FEATURE_COLUMNS
from segstream.training.generate import generate_tables, write_tables
from segstream.training.train import TrainConfig, TrainResult, fit


def _sklearn_pipeline(features: pd.DataFrame, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The notebook's recipe in plain scikit-learn (ids excluded): labels_ and predict()."""
    X = features[list(FEATURE_COLUMNS)].copy()
    for column in CATEGORICAL_COLUMNS:
        X[column] = LabelEncoder().fit_transform(X[column].to_numpy(dtype=object))
    X = X.to_numpy(dtype=np.float64)
    scaler = StandardScaler().fit(X)
    pca = PCA(n_components=2, random_state=seed).fit(scaler.transform(X))
    points = pca.transform(scaler.transform(X))
    # Single-threaded like segstream's fit: k-means' sums are reduced per thread, so the
    # thread count may move centres by an ulp.
    with threadpool_limits(limits=1):
        kmeans = KMeans(k, init="k-means++", n_init=10, max_iter=300, random_state=seed)
        kmeans.fit(points)
    return kmeans.labels_, kmeans.predict(points)


@pytest.fixture(scope="module")
def fit_100000(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """A k=5 fit of 100,000 generated users' features (seed 11; fit seed 42)."""
    directory = tmp_path_factory.mktemp("thelook-100000")
    write_tables(generate_tables(127_000, seed=11), directory)
    features = read_features(DataSource(path=directory)).head(100_000)
    result = fit(features, TrainConfig(k=5, k_values=(5,), seed=42, silhouette_sample=500))
    assert len(result.features) == 100_000
    return result


def test_assign_reproduces_sklearn_labels_over_100000_training_rows(
    fit_100000: TrainResult,
) -> None:
    trained = fit_100000
    features = trained.features
    result = assign(trained.model, features)
    labels, predicted = _sklearn_pipeline(features, k=5, seed=42)

    assert int((result.segments != labels).sum()) == 0
    assert int((result.segments != predicted).sum()) == 0
    assert int((result.segments != trained.segments).sum()) == 0
    assert not result.unseen.any()

    # Numbered after a previous version whose segment i is this fit's cluster q[i]: assign()
    # on the renumbered model gives sklearn's labels through the same permutation.
    q = np.array([3, 0, 4, 2, 1])
    previous = dataclasses.replace(trained.model, centers=trained.model.centers[q])
    aligned, _ = align(trained, previous)
    renumbered = assign(aligned.model, features).segments
    assert int((renumbered != np.argsort(q)[labels]).sum()) == 0
    assert int((renumbered != aligned.segments).sum()) == 0


def _assert_rows_equal(got: Assignment, full: Assignment, rows: np.ndarray) -> None:
    """Bit for bit: segment, components and distances of ``full``'s ``rows`` in ``got``."""
    np.testing.assert_array_equal(got.segments, full.segments[rows])
    np.testing.assert_array_equal(got.components, full.components[rows])
    np.testing.assert_array_equal(got.distances, full.distances[rows])


def test_every_row_gets_the_same_floats_in_a_batch_of_any_size_and_position(
    fit_100000: TrainResult,
) -> None:
    """The 100,000 rows cut into consecutive batches of random sizes 1, 7 and 1000 (so at
    random positions), then each batch assigned on its own: the full batch's floats."""
    model, features = fit_100000.model, fit_100000.features
    full = assign(model, features)
    rng = np.random.default_rng(3)
    sizes = rng.choice([1, 7, 1000], size=len(features), p=[0.2, 0.3, 0.5])
    bounds = np.cumsum(np.concatenate([[0], sizes]))
    bounds = np.append(bounds[bounds < len(features)], len(features))
    for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        rows = np.arange(start, stop)
        _assert_rows_equal(assign(model, features.iloc[start:stop]), full, rows)


def test_a_row_alone_gets_the_same_floats_as_in_the_full_batch(fit_100000: TrainResult) -> None:
    """One-user batches as the worker and /predict build them (a list per column)."""
    model, features = fit_100000.model, fit_100000.features
    full = assign(model, features)
    rng = np.random.default_rng(4)
    for i in rng.choice(len(features), size=600, replace=False).tolist():
        alone = assign(model, {c: [features[c].iloc[i]] for c in FEATURE_COLUMNS})
        _assert_rows_equal(alone, full, np.array([i]))


def _near_ties(model: Model, features: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``features`` moved onto the perpendicular bisector of their two nearest centres
    by changing ``age`` (a float here), then nudged by -3..3 ulps of age.

    Moving age by ``t`` moves the point by ``t * g`` in PCA space (``g`` = age's loadings over
    its scale), so the bisector ``(p - (a + b) / 2) . (a - b) = 0`` is crossed at one ``t``.
    """
    result = assign(model, features)
    two = np.argsort(result.distances, axis=1)[:, :2]
    a, b = model.centers[two[:, 0]], model.centers[two[:, 1]]
    w = a - b
    g = model.pca_components[:, FEATURE_COLUMNS.index("age")] / model.scaler_scale[0]
    t = -np.einsum("ij,ij->i", result.components - (a + b) / 2, w) / (w @ g)
    age = features["age"].to_numpy(dtype=np.float64) + t
    ulps = np.random.default_rng(5).integers(-3, 4, size=len(age))
    return features.assign(age=age + ulps * np.spacing(age))


def test_near_tie_points_get_the_same_label_alone_as_in_any_batch(
    fit_100000: TrainResult,
) -> None:
    model = fit_100000.model
    ties = _near_ties(model, fit_100000.features.head(1_200))
    gaps = np.diff(np.sort(assign(model, ties).distances, axis=1)[:, :2], axis=1)[:, 0]
    # Keep the true ties (elsewhere on the way a third centre became nearer).
    ties = ties[gaps < 1e-12].reset_index(drop=True)
    assert len(ties) > 600
    together = assign(model, ties)
    alone = [
        assign(model, {c: [ties[c].iloc[i]] for c in FEATURE_COLUMNS}) for i in range(len(ties))
    ]
    np.testing.assert_array_equal([a.segments[0] for a in alone], together.segments)
    np.testing.assert_array_equal(np.stack([a.components[0] for a in alone]), together.components)
    np.testing.assert_array_equal(np.stack([a.distances[0] for a in alone]), together.distances)
    # The ties spread at random positions among the 100,000 real rows, then batches of 7.
    mixed = pd.concat([fit_100000.features, ties], ignore_index=True)
    order = np.random.default_rng(6).permutation(len(mixed))
    shuffled = assign(model, mixed.iloc[order])
    position = np.argsort(order)[len(fit_100000.features) :]
    np.testing.assert_array_equal(shuffled.segments[position], together.segments)
    np.testing.assert_array_equal(shuffled.components[position], together.components)
    for start in range(0, len(ties), 7):
        rows = np.arange(start, min(start + 7, len(ties)))
        _assert_rows_equal(assign(model, ties.iloc[rows]), together, rows)


def test_nearest_labels_bisector_points_alike_alone_and_in_a_batch() -> None:
    """Points on the bisector of two centres, nudged by -3..3 ulps per coordinate: ``nearest``
    gives each the same label and distances alone as among 20,000 others."""
    centers = np.array([[-1.3, 0.4], [0.7, 1.1], [0.9, -0.8], [2.6, 0.3], [-0.2, -1.9]])
    rng = np.random.default_rng(7)
    n = 20_000
    pair = np.array([rng.choice(len(centers), size=2, replace=False) for _ in range(n)])
    a, b = centers[pair[:, 0]], centers[pair[:, 1]]
    perpendicular = np.stack([b[:, 1] - a[:, 1], a[:, 0] - b[:, 0]], axis=1)
    points = (a + b) / 2 + rng.uniform(-0.3, 0.3, size=(n, 1)) * perpendicular
    points += rng.integers(-3, 4, size=(n, 2)) * np.spacing(points)
    segments, distances = nearest(centers, points)
    # Where a and b are the two nearest, the two smallest distances tie to a few ulps.
    assert (np.diff(np.sort(distances, axis=1)[:, :2], axis=1) < 1e-12).sum() > n // 4
    alone = [nearest(centers, points[i : i + 1]) for i in range(n)]
    np.testing.assert_array_equal([one[0][0] for one in alone], segments)
    np.testing.assert_array_equal(np.stack([one[1][0] for one in alone]), distances)


def test_encoding_is_label_encoder_of_the_training_columns(small_fit: TrainResult) -> None:
    features = small_fit.features
    X = encode(small_fit.model, features)
    for j, column in enumerate(FEATURE_COLUMNS):
        if column in CATEGORICAL_COLUMNS:
            expected = LabelEncoder().fit_transform(features[column].to_numpy(dtype=object))
        else:
            expected = features[column].to_numpy(dtype=np.float64)
        np.testing.assert_array_equal(X[:, j], expected, err_msg=column)


def test_a_single_new_row_is_encoded_with_the_persisted_vocabularies(
    small_fit: TrainResult,
) -> None:
    """The notebook's defect: a LabelEncoder fitted on one row encodes every category as 0."""
    features = small_fit.features
    i = int(np.flatnonzero(features["country"] != small_fit.model.vocabularies["country"][0])[0])
    row = features.iloc[[i]]
    single = assign(small_fit.model, {c: [row[c].iloc[0]] for c in FEATURE_COLUMNS})
    batch = assign(small_fit.model, features)
    X_single = encode(small_fit.model, row)
    assert X_single[0, FEATURE_COLUMNS.index("country")] != 0
    np.testing.assert_array_equal(X_single[0], encode(small_fit.model, features)[i])
    assert single.segments[0] == batch.segments[i] == small_fit.segments[i]
    np.testing.assert_array_equal(single.components[0], batch.components[i])


def _row(model_features: pd.DataFrame, i: int, **changes: object) -> dict[str, list[object]]:
    row = {c: [model_features[c].iloc[i]] for c in FEATURE_COLUMNS}
    row.update({c: [v] for c, v in changes.items()})
    return row


def test_unseen_categories_take_the_fallback_and_are_flagged(small_fit: TrainResult) -> None:
    model = small_fit.model
    features = small_fit.features
    fallback = model.fallbacks["country"]
    as_fallback = assign(model, _row(features, 0, country=fallback))
    unseen = assign(model, _row(features, 0, country="Atlantis", most_frequent_brand="NoSuchBrand"))
    assert unseen.unseen.tolist() == [True]
    assert unseen.unseen_names(0) == ("country", "most_frequent_brand")
    brand_fallback = assign(
        model,
        _row(
            features,
            0,
            country=fallback,
            most_frequent_brand=model.fallbacks["most_frequent_brand"],
        ),
    )
    np.testing.assert_array_equal(unseen.components, brand_fallback.components)
    assert not as_fallback.unseen.any()


def test_missing_categories_are_treated_as_unseen(small_fit: TrainResult) -> None:
    rows = {c: list(small_fit.features[c].iloc[:3]) for c in FEATURE_COLUMNS}
    rows["gender"] = [None, "", float("nan")]
    result = assign(small_fit.model, rows)
    assert result.unseen.tolist() == [True, True, True]
    assert result.unseen_columns[:, CATEGORICAL_COLUMNS.index("gender")].all()


def test_unseen_flags_mark_only_the_rows_concerned(small_fit: TrainResult) -> None:
    rows = small_fit.features.head(50).copy()
    rows.loc[7, "country"] = "Atlantis"
    _, flags = encode_with_flags(small_fit.model, rows)
    assert flags.sum() == 1 and flags[7, CATEGORICAL_COLUMNS.index("country")]


def test_categorical_dtype_input_gives_the_same_result(small_fit: TrainResult) -> None:
    plain = small_fit.features.head(500)
    categorical = plain.astype({c: "category" for c in CATEGORICAL_COLUMNS})
    categorical.loc[3, "country"] = np.nan
    expected = assign(
        small_fit.model, plain.assign(country=plain["country"].where(plain.index != 3))
    )
    got = assign(small_fit.model, categorical)
    np.testing.assert_array_equal(got.segments, expected.segments)
    np.testing.assert_array_equal(got.components, expected.components)
    assert got.unseen.tolist() == expected.unseen.tolist()


def test_distances_are_euclidean_and_the_segment_is_the_nearest(small_fit: TrainResult) -> None:
    result = assign(small_fit.model, small_fit.features)
    direct = np.linalg.norm(result.components[:, None, :] - small_fit.model.centers[None], axis=2)
    np.testing.assert_allclose(result.distances, direct, atol=1e-9)
    assert (np.argmin(direct, axis=1) == result.segments).all()
    assert result.distances.shape == (len(small_fit.features), small_fit.model.k)


def test_missing_column_raises_model_mismatch(small_fit: TrainResult) -> None:
    with pytest.raises(ModelMismatchError, match="most_frequent_brand"):
        assign(small_fit.model, small_fit.features.drop(columns=["most_frequent_brand"]))


def test_missing_or_non_numeric_numbers_are_refused(small_fit: TrainResult) -> None:
    with pytest.raises(DataError, match="age"):
        assign(small_fit.model, _row(small_fit.features, 0, age=None))
    with pytest.raises(DataError, match="total_orders"):
        assign(small_fit.model, _row(small_fit.features, 0, total_orders="three"))


def test_ragged_columns_are_refused(small_fit: TrainResult) -> None:
    rows = _row(small_fit.features, 0)
    rows["age"] = [30, 40]
    with pytest.raises(DataError, match="differ in length"):
        assign(small_fit.model, rows)


def test_empty_batch_gives_empty_arrays(small_fit: TrainResult) -> None:
    result = assign(small_fit.model, small_fit.features.head(0))
    assert result.segments.shape == (0,) and result.distances.shape == (0, small_fit.model.k)
