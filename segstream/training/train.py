"""Fitting the segmentation: label-encode -> StandardScaler -> PCA(2) -> k-means with an elbow.

The notebook's recipe, minus its defects:

- ``user_id`` is never a feature: only :data:`FEATURE_COLUMNS` reach the scaler (a test
  fits with shuffled ids and gets the same model);
- the fitted vocabularies are kept in the model and reused at assignment time, instead of
  fitting a new LabelEncoder on each new row;
- categories unseen in training get one documented treatment (see
  :mod:`segstream.training.assign`), recorded here as each column's ``fallback``.

k-means runs for every k of ``TrainConfig.k_values`` (2..10) with
``KMeans(k, init="k-means++", n_init=10, max_iter=300, random_state=seed)`` on the two PCA
components; the SSE (inertia) and the silhouette on a fixed sample are recorded for each k,
and the final model is the fit for the chosen k (``--k N``, or the knee of the SSE curve, see
:mod:`segstream.training.knee`). The labels of that fit are sklearn's labels, which
:func:`~segstream.training.assign.assign` reproduces exactly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from segstream.errors import DataError
from segstream.training.artifact import Model
from segstream.training.assign import encode, project
from segstream.training.features import (
    CATEGORICAL_COLUMNS,
    FEATURE_COLUMNS,
    ID_COLUMN,
    most_frequent,
)
from segstream.training.knee import KNEE_METHOD, find_knee

__all__ = [
    "K_RANGE",
    "MIN_USERS",
    "Progress",
    "TrainConfig",
    "TrainResult",
    "clean_features",
    "data_fingerprint",
    "fit",
]

K_RANGE = range(2, 11)
MIN_USERS = K_RANGE.stop
"""Fewest users (rows with every feature) a model is trained on: one more than the largest k
tried, so that every k of ``K_RANGE`` has a silhouette (defined for 2 <= k <= users - 1)."""
"""The k values of the elbow and the allowed values of ``--k``."""

Progress = Callable[[str, int, int], None]
"""Progress callback: ``(step description, units done, units in total)``."""


@dataclass(frozen=True)
class TrainConfig:
    """How to fit. ``k=None`` picks k at the knee of the SSE curve.

    Raises:
        DataError: k outside 2..10, an empty ``k_values``, or a non-positive sample size.
    """

    k: int | None = None
    seed: int = 42
    k_values: tuple[int, ...] = tuple(K_RANGE)
    n_init: int = 10
    max_iter: int = 300
    silhouette_sample: int = 5_000

    def __post_init__(self) -> None:
        if self.k is not None and self.k not in K_RANGE:
            raise DataError(
                f"k must be between {K_RANGE.start} and {K_RANGE.stop - 1}, got {self.k}"
            )
        if not self.k_values or any(k not in K_RANGE for k in self.k_values):
            raise DataError(f"k_values must be within 2..10, got {self.k_values}")
        if self.silhouette_sample < 2 or self.n_init < 1 or self.max_iter < 1:
            raise DataError("silhouette_sample, n_init and max_iter must be positive")


@dataclass(frozen=True, eq=False)
class TrainResult:
    """A fitted model with the training rows it saw.

    ``features`` holds the rows actually used (``user_id`` + features, missing rows dropped,
    ``dropped_rows`` counting them); ``components`` (n, 2) and ``segments`` (n,) are aligned
    with it, ``segments`` being sklearn's ``labels_``.
    """

    model: Model
    features: pd.DataFrame
    components: np.ndarray
    segments: np.ndarray
    dropped_rows: int


@dataclass(frozen=True, eq=False)
class _Encoding:
    """Just the vocabularies: what :func:`encode` needs before the rest of the model exists."""

    vocabularies: Mapping[str, tuple[str, ...]]
    fallbacks: Mapping[str, str]
    feature_columns: tuple[str, ...] = FEATURE_COLUMNS
    categorical_columns: tuple[str, ...] = CATEGORICAL_COLUMNS


@dataclass(frozen=True, eq=False)
class _Projection:
    """Just the fitted scaler and PCA: what :func:`project` needs before the centres exist."""

    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    pca_mean: np.ndarray
    pca_components: np.ndarray


def clean_features(features: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep ``user_id`` + FEATURE_COLUMNS and drop rows with a missing value (NaN, None, "").

    Returns:
        ``(rows kept, number dropped)``.

    Raises:
        DataError: a feature column is missing.
    """
    missing = [c for c in (ID_COLUMN, *FEATURE_COLUMNS) if c not in features.columns]
    if missing:
        raise DataError(f"the feature frame lacks columns {missing}")
    frame = features[[ID_COLUMN, *FEATURE_COLUMNS]]
    blank = frame[list(CATEGORICAL_COLUMNS)].eq("").any(axis=1)
    keep = ~(frame.isna().any(axis=1) | blank)
    return frame.loc[keep].reset_index(drop=True), int((~keep).sum())


def data_fingerprint(features: pd.DataFrame) -> str:
    """sha256 of the training rows (ids and features, in order): identifies the data."""
    digest = hashlib.sha256(",".join(features.columns).encode())
    digest.update(pd.util.hash_pandas_object(features, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _vocabularies(frame: pd.DataFrame) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Sorted vocabularies (code point order, as LabelEncoder) and each column's fallback."""
    vocabularies, fallbacks = {}, {}
    for column in CATEGORICAL_COLUMNS:
        counts = frame[column].astype(str).value_counts()
        vocabularies[column] = tuple(sorted(counts.index))
        # The unseen-value fallback: the most frequent value, ties by the SQL's own rule.
        fallbacks[column] = most_frequent(counts.to_dict()) or vocabularies[column][0]
    return vocabularies, fallbacks


def _silhouette(components: np.ndarray, labels: np.ndarray, sample: np.ndarray) -> float:
    """Silhouette of ``labels`` on the fixed ``sample`` rows; NaN where undefined."""
    sampled = labels[sample]
    if not 2 <= np.unique(sampled).size <= sample.size - 1:
        return math.nan
    return float(silhouette_score(components[sample], sampled))


def _elbow(
    components: np.ndarray, ks: tuple[int, ...], config: TrainConfig, report: Progress
) -> tuple[dict[int, KMeans], list[float]]:
    """The notebook's k-means for every k of ``ks``: the fits and their SSE (inertia)."""
    fits: dict[int, KMeans] = {}
    sse = []
    for i, k in enumerate(ks):
        report(f"k-means elbow, k={k}", i, len(ks))
        km = KMeans(
            n_clusters=k,
            init="k-means++",
            n_init=config.n_init,
            max_iter=config.max_iter,
            random_state=config.seed,
        ).fit(components)
        fits[k] = km
        sse.append(float(km.inertia_))
    report("k-means elbow", len(ks), len(ks))
    return fits, sse


def fit(
    features: pd.DataFrame,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> TrainResult:
    """Fit the model on a feature frame (as :func:`~segstream.training.data.read_features`).

    Raises:
        DataError: a column is missing, no rows remain, fewer than :data:`MIN_USERS` rows
            remain, or fewer distinct rows than k.
    """
    config = config or TrainConfig()
    report = progress or (lambda step, done, total: None)
    frame, dropped = clean_features(features)
    if frame.empty:
        raise DataError("no training rows: the data is empty once rows with missing values go")
    if frame[ID_COLUMN].duplicated().any():
        raise DataError("user_id repeats in the training data: one row per user is required")
    if len(frame) < MIN_USERS:
        raise DataError(
            f"too few users to segment: {len(frame)} with every feature"
            + (f" ({dropped} more dropped for missing values)" if dropped else "")
            + f"; training needs at least {MIN_USERS}, so that k={K_RANGE.start}..."
            f"{K_RANGE.stop - 1} can each be scored by a silhouette"
        )

    report("encoding and projecting", 0, 1)
    vocabularies, fallbacks = _vocabularies(frame)
    X = encode(_Encoding(vocabularies, fallbacks), frame)
    scaler = StandardScaler().fit(X)
    pca = PCA(n_components=2, random_state=config.seed).fit(scaler.transform(X))
    # assign()'s own projection, so the stored training components are those that
    # `segstream assign` and the stream compute for the same rows, bit for bit.
    components = project(_Projection(scaler.mean_, scaler.scale_, pca.mean_, pca.components_), X)
    report("encoding and projecting", 1, 1)

    n_distinct = len(np.unique(components, axis=0))
    ks = tuple(k for k in config.k_values if k <= n_distinct)
    if config.k is not None and config.k > n_distinct:
        raise DataError(f"too few rows for k={config.k}: only {n_distinct} distinct points")
    if not ks and config.k is None:
        raise DataError(f"too few rows to segment: only {n_distinct} distinct points")
    if config.k is not None and config.k not in ks:
        ks = tuple(sorted({*ks, config.k}))

    rng = np.random.default_rng(config.seed)
    sample = np.sort(
        rng.choice(len(frame), min(len(frame), config.silhouette_sample), replace=False)
    )
    # One thread for BLAS and OpenMP: on 2 cores, sklearn's k-means++ (BLAS threads) and
    # Lloyd iterations (OpenMP threads) spin against each other and against any other load;
    # measured on this machine, single-threaded the elbow runs 4-10x faster.
    with threadpool_limits(limits=1):
        fits, sse = _elbow(components, ks, config, report)
        silhouette = []
        for i, k in enumerate(ks):
            report(f"silhouette (sample), k={k}", i, len(ks))
            silhouette.append(_silhouette(components, fits[k].labels_, sample))
        report("silhouette (sample)", len(ks), len(ks))

    k = config.k if config.k is not None else find_knee(ks, sse)
    chosen = fits[k]
    fingerprint = data_fingerprint(frame)
    created = (now or datetime.now(UTC)).astimezone(UTC)
    model = Model(
        version=f"{created:%Y%m%dT%H%M%SZ}-{fingerprint[:8]}",
        vocabularies=vocabularies,
        fallbacks=fallbacks,
        scaler_mean=scaler.mean_,
        scaler_scale=scaler.scale_,
        pca_mean=pca.mean_,
        pca_components=pca.components_,
        centers=chosen.cluster_centers_,
        n_rows=len(frame),
        k_values=ks,
        sse=tuple(sse),
        silhouette=tuple(silhouette),
        k_selection=f"fixed k={k}" if config.k is not None else f"auto k={k} ({KNEE_METHOD})",
        seed=config.seed,
        data_fingerprint=fingerprint,
        created_at=created.isoformat(timespec="seconds"),
        explained_variance_ratio=tuple(float(v) for v in pca.explained_variance_ratio_),
        extra={
            "n_init": config.n_init,
            "max_iter": config.max_iter,
            "silhouette_sample": int(sample.size),
            "dropped_rows": dropped,
        },
    )
    return TrainResult(
        model=model,
        features=frame,
        components=components,
        segments=chosen.labels_.astype(np.int64),
        dropped_rows=dropped,
    )
