"""THE assignment function: encode -> scale -> project -> nearest centre, vectorised over a batch.

``segstream assign``, ``segstream predict`` and the stream worker all call :func:`assign`; it
is the only implementation, so batch and stream agree by construction. It reproduces
scikit-learn's ``StandardScaler`` -> ``PCA(2)`` -> ``KMeans.predict`` exactly, operation for
operation (see :func:`project` and :func:`nearest`).

Encoding (sklearn ``LabelEncoder`` semantics): a categorical value's code is its index in the
model's sorted vocabulary; numbers are used as float64.

Unseen categories (a value not in the training vocabulary: a new country, a new brand, and
also a missing value ``None``/NaN/``""``) get one deterministic treatment: they are encoded as
the column's *fallback*, its most frequent training value (``Model.fallbacks``), and always
flagged in :attr:`Assignment.unseen` / :attr:`Assignment.unseen_columns`. They are never encoded
as some other value silently. Missing *numeric* values cannot be imputed and raise DataError.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from segstream.errors import DataError, ModelMismatchError
from segstream.training.artifact import Model
from segstream.training.features import CATEGORICAL_COLUMNS

__all__ = [
    "Assignment",
    "Encoding",
    "Features",
    "Projection",
    "assign",
    "encode",
    "encode_column",
    "encode_with_flags",
    "nearest",
    "project",
]

Features = Mapping[str, Sequence[object] | np.ndarray | pd.Series] | pd.DataFrame
"""A batch of feature rows, column-wise: every model column, all of the same length."""


class Encoding(Protocol):
    """What encoding needs of a model: its columns, vocabularies and unseen-value fallbacks.

    :class:`~segstream.training.artifact.Model` is one; training uses a bare one before the
    rest of the model exists.
    """

    @property
    def feature_columns(self) -> tuple[str, ...]: ...
    @property
    def categorical_columns(self) -> tuple[str, ...]: ...
    @property
    def vocabularies(self) -> Mapping[str, tuple[str, ...]]: ...
    @property
    def fallbacks(self) -> Mapping[str, str]: ...


class Projection(Protocol):
    """What projection needs of a model: the fitted scaler and PCA, as float64 arrays.

    :class:`~segstream.training.artifact.Model` is one; training uses a bare one before the
    centres exist, so that the points k-means is fitted on are :func:`project`'s.
    """

    @property
    def scaler_mean(self) -> np.ndarray: ...
    @property
    def scaler_scale(self) -> np.ndarray: ...
    @property
    def pca_mean(self) -> np.ndarray: ...
    @property
    def pca_components(self) -> np.ndarray: ...


# One BLAS thread for the thin products below ((n, 7) @ (7, 2) and (n, 2) @ (2, k)): waking
# a second OpenBLAS thread costs more than it saves, and on a loaded 2-core machine it made a
# 100,000-row call up to 20x slower. OpenBLAS splits a product by rows and columns, never
# along the inner dimension, so the results are bit for bit those of more threads.
_BLAS = ThreadpoolController()

_VOCAB_INDEXES: weakref.WeakKeyDictionary[Model, dict[str, pd.Index]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, eq=False)
class Assignment:
    """The result of :func:`assign` for ``n`` rows and a model of ``k`` segments.

    Attributes:
        segments: (n,) int64, the nearest centre's index, 0..k-1 (scikit-learn's label).
        components: (n, 2) float64, the rows in PCA space (component_1, component_2).
        distances: (n, k) float64, Euclidean distance from each row to each centre, in PCA space.
        unseen: (n,) bool, True where any categorical value was not in the vocabulary.
        unseen_columns: (n, 5) bool; column ``j`` is ``CATEGORICAL_COLUMNS[j]`` (gender, country,
            traffic_source, most_frequent_brand, most_frequent_category).
    """

    segments: np.ndarray
    components: np.ndarray
    distances: np.ndarray
    unseen: np.ndarray
    unseen_columns: np.ndarray

    def __len__(self) -> int:
        return int(self.segments.shape[0])

    def unseen_names(self, row: int) -> tuple[str, ...]:
        """Names of the categorical columns of ``row`` that held an unseen value."""
        flags = self.unseen_columns[row]
        return tuple(c for c, flag in zip(CATEGORICAL_COLUMNS, flags, strict=True) if flag)


def _vocab_indexes(model: Encoding) -> dict[str, pd.Index]:
    """Hash indexes of the model's vocabularies, built once per model object."""
    indexes = _VOCAB_INDEXES.get(model)
    if indexes is None:
        indexes = {c: pd.Index(np.asarray(v, dtype=object)) for c, v in model.vocabularies.items()}
        _VOCAB_INDEXES[model] = indexes
    return indexes


def encode_column(
    values: Sequence[object] | np.ndarray | pd.Series, vocabulary: pd.Index, fallback_code: int
) -> tuple[np.ndarray, np.ndarray]:
    """Label-encode one categorical column against a sorted vocabulary.

    Each distinct value is looked up once (``pd.factorize`` then a hash lookup of the
    uniques), so the cost is one pass over the rows whatever the vocabulary size.

    Returns:
        ``(codes, unseen)``: (n,) int64 codes, with ``fallback_code`` where the value is not in
        ``vocabulary`` (or is missing), and the (n,) bool mask of those rows.
    """
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
        row_codes = values.cat.codes.to_numpy()
        uniques = values.cat.categories
    else:
        if not isinstance(values, np.ndarray | pd.Series | pd.Index):
            values = np.asarray(values, dtype=object)
        row_codes, uniques = pd.factorize(values, use_na_sentinel=True)
    # -1 marks "not in the vocabulary"; one extra slot maps the NA sentinel (-1) to -1 too.
    lookup = np.append(vocabulary.get_indexer(uniques), -1)
    codes = lookup[row_codes].astype(np.int64, copy=False)
    unseen = codes < 0
    codes[unseen] = fallback_code
    return codes, unseen


def _column(features: Features, name: str) -> object:
    try:
        return features[name]
    except KeyError:
        raise ModelMismatchError(f"features lack column {name!r} the model needs") from None


def encode_with_flags(model: Encoding, features: Features) -> tuple[np.ndarray, np.ndarray]:
    """The (n, 7) float64 model input in ``model.feature_columns`` order, and unseen flags.

    Returns:
        ``(X, unseen_columns)`` with ``unseen_columns`` (n, 5) bool as in :class:`Assignment`.

    Raises:
        ModelMismatchError: a model column is missing from ``features``.
        DataError: columns of different lengths, or a numeric value that is missing or not a
            number.
    """
    indexes = _vocab_indexes(model)
    columns = {name: _column(features, name) for name in model.feature_columns}
    lengths = {len(v) for v in columns.values()}  # type: ignore[arg-type]
    if len(lengths) > 1:
        raise DataError(f"feature columns differ in length: {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    X = np.empty((n, len(model.feature_columns)), dtype=np.float64)
    unseen = np.zeros((n, len(model.categorical_columns)), dtype=bool)
    for j, name in enumerate(model.feature_columns):
        values = columns[name]
        if name in model.categorical_columns:
            vocab = indexes[name]
            fallback = int(vocab.get_loc(model.fallbacks[name]))
            codes, flags = encode_column(values, vocab, fallback)  # type: ignore[arg-type]
            X[:, j] = codes
            unseen[:, model.categorical_columns.index(name)] = flags
        else:
            try:
                X[:, j] = np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise DataError(f"column {name!r} holds values that are not numbers") from exc
            if not np.isfinite(X[:, j]).all():
                bad = int((~np.isfinite(X[:, j])).sum())
                raise DataError(f"column {name!r} has {bad} missing or non-finite values")
    return X, unseen


def encode(model: Encoding, features: Features) -> np.ndarray:
    """The (n, 7) float64 model input; unseen categories take the column's fallback code."""
    return encode_with_flags(model, features)[0]


def project(model: Projection, X: np.ndarray) -> np.ndarray:
    """Standardise then project onto the 2 principal components: (n, 7) -> (n, 2) float64.

    The same operations in the same order as sklearn's ``StandardScaler.transform``
    (``(X - mean) / scale``) and ``PCA.transform`` (``Z @ C.T - mean @ C.T``), so the
    floating-point results are identical.
    """
    Z = (X - model.scaler_mean) / model.scaler_scale
    components = Z @ model.pca_components.T
    components -= model.pca_mean.reshape(1, -1) @ model.pca_components.T
    return components


def nearest(centers: np.ndarray, components: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centre and the distances to all centres.

    Follows sklearn's k-means E-step: the label minimises ``||c||^2 - 2 x.c`` (the row's own
    ``||x||^2`` is the same for every centre), ties going to the lowest index.

    Returns:
        ``(segments (n,) int64, distances (n, k) float64)``.
    """
    center_sq = np.einsum("ij,ij->i", centers, centers)
    partial = center_sq - 2.0 * (components @ centers.T)
    segments = np.argmin(partial, axis=1).astype(np.int64, copy=False)
    row_sq = np.einsum("ij,ij->i", components, components)
    distances = np.sqrt(np.maximum(partial + row_sq[:, None], 0.0))
    return segments, distances


def assign(model: Model, features: Features) -> Assignment:
    """Segment, components and distances of every row of ``features``.

    Args:
        model: a loaded model (see :func:`segstream.training.artifact.load_model`).
        features: column-wise rows: a DataFrame or a mapping from each of
            ``model.feature_columns`` to a sequence or array; other columns (``user_id``) are
            ignored.

    Raises:
        ModelMismatchError: a model column is missing.
        DataError: ragged columns or bad numeric values.
    """
    X, unseen_columns = encode_with_flags(model, features)
    with _BLAS.limit(limits=1, user_api="blas"):
        components = project(model, X)
        segments, distances = nearest(model.centers, components)
    return Assignment(
        segments=segments,
        components=components,
        distances=distances,
        unseen=unseen_columns.any(axis=1),
        unseen_columns=unseen_columns,
    )
