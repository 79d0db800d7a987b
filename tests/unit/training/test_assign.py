"""THE assign: sklearn's labels exactly (also renumbered), stored vocabularies, unseen flagged."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.preprocessing import LabelEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from segstream.errors import DataError, ModelMismatchError
from segstream.training.align import align
from segstream.training.assign import assign, encode, encode_with_flags
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


def test_assign_reproduces_sklearn_labels_over_100000_training_rows(tmp_path: Path) -> None:
    write_tables(generate_tables(127_000, seed=11), tmp_path)
    features = read_features(DataSource(path=tmp_path))
    features = features.head(100_000)
    assert len(features) == 100_000
    trained = fit(features, TrainConfig(k=5, k_values=(5,), seed=42, silhouette_sample=500))

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
