"""One new customer's segment and the existing users most like them; the assignments a model
version stores.

- :func:`assignment_frame` / :func:`assign_frame`: the batch reference the stream must match
  (user_id, segment, component_1, component_2, unseen), as ``assignments.parquet`` holds it.
- :func:`predict_one` / :func:`similar_users`: one new customer's segment, distances and the
  most similar existing users: the nearest by Euclidean distance in the model's component
  space, the metric k-means assigns by (the notebook's cosine similarity ignored the distance
  from the origin and ranked users of other segments first). The existing users are the
  training users stored in ``assignments.parquet`` of the model version, or, with
  ``--data``/``--db``, every user of that data assigned afresh.

The worker's HTTP side predicts with this module: it imports neither the fitting
(scikit-learn, SciPy) nor the data sources (DuckDB), which cost a worker about two seconds of
CPU at every start when they came with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from segstream.errors import ArtifactError, DataError
from segstream.training.artifact import Model, resolve_model_dir
from segstream.training.assign import assign
from segstream.training.features import ID_COLUMN

if TYPE_CHECKING:
    from segstream.training.data import DataSource

__all__ = [
    "ASSIGNMENTS_FILE",
    "SIMILAR_COLUMNS",
    "Prediction",
    "assign_frame",
    "assignment_frame",
    "predict_one",
    "reference_users",
    "similar_users",
]

ASSIGNMENTS_FILE = "assignments.parquet"
SIMILAR_COLUMNS: tuple[str, ...] = (ID_COLUMN, "distance", "segment")
"""Columns of :attr:`Prediction.similar`, in order."""


def assignment_frame(
    user_ids: np.ndarray | pd.Series,
    segments: np.ndarray,
    components: np.ndarray,
    unseen: np.ndarray | None = None,
) -> pd.DataFrame:
    """user_id (int64), segment (int64), component_1, component_2 (float64), unseen (bool).

    ``unseen`` (any categorical value outside the vocabulary) is all False when not given,
    as for the training users themselves.
    """
    n = len(segments)
    return pd.DataFrame(
        {
            ID_COLUMN: np.asarray(user_ids, dtype=np.int64),
            "segment": np.asarray(segments, dtype=np.int64),
            "component_1": components[:, 0],
            "component_2": components[:, 1],
            "unseen": np.zeros(n, dtype=bool) if unseen is None else unseen,
        }
    )


def assign_frame(model: Model, features: pd.DataFrame) -> pd.DataFrame:
    """:func:`assignment_frame` of every row of a feature frame (with ``user_id``)."""
    result = assign(model, features)
    return assignment_frame(features[ID_COLUMN], result.segments, result.components, result.unseen)


@dataclass(frozen=True, eq=False)
class Prediction:
    """One customer's assignment and the existing users most like them.

    ``similar`` has the columns :data:`SIMILAR_COLUMNS`: user_id (int64), distance (float64,
    Euclidean, in the units of the PCA components) and segment (int64), nearest first.
    """

    segment: int
    components: tuple[float, float]
    distances: tuple[float, ...]
    unseen_columns: tuple[str, ...]
    similar: pd.DataFrame


def reference_users(model: Model, model_path: Path, source: DataSource | None) -> pd.DataFrame:
    """The existing users to compare with: assigned from ``source``, or stored by training.

    Raises:
        ArtifactError: no source and the version has no readable assignments.parquet.
    """
    if source is not None:
        # Here, not at the top: the worker's HTTP side never passes a source, and the data
        # module brings DuckDB.
        from segstream.training.data import read_features

        return assign_frame(model, read_features(source))
    path = resolve_model_dir(model_path) / ASSIGNMENTS_FILE
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException) as exc:
        raise ArtifactError(f"cannot read {path} (give --data to recompute it): {exc}") from exc


def similar_users(query: np.ndarray, reference: pd.DataFrame, top: int = 5) -> pd.DataFrame:
    """The ``top`` reference users nearest to ``query`` (2,) in the model's component space.

    Euclidean distance between (component_1, component_2) points, the metric k-means assigns
    by, so the nearest users are in the query's segment unless it lies near a boundary. Equal
    distances go to the smaller user_id. O(n) in ``len(reference)`` (a partition, then a sort
    of the ``top`` candidates and anyone tied with the last of them).

    Returns:
        :data:`SIMILAR_COLUMNS`, nearest first, ``min(top, len(reference))`` rows.
    """
    ids = reference[ID_COLUMN].to_numpy(dtype=np.int64)
    vectors = reference[["component_1", "component_2"]].to_numpy(dtype=np.float64)
    point = np.asarray(query, dtype=np.float64)
    distance = np.hypot(vectors[:, 0] - point[0], vectors[:, 1] - point[1])
    top = max(0, min(top, distance.size))
    if 0 < top < distance.size:
        # Everyone within the top-th smallest distance: the ties at the cut are all kept here,
        # so the sort below decides them by user_id.
        cut = np.partition(distance, top - 1)[top - 1]
        candidates = np.flatnonzero(distance <= cut)
    else:
        candidates = np.arange(top)
    order = candidates[np.lexsort((ids[candidates], distance[candidates]))][:top]
    return _similar_frame(
        ids[order], distance[order], reference["segment"].to_numpy(dtype=np.int64)[order]
    )


def _similar_frame(ids: np.ndarray, distance: np.ndarray, segments: np.ndarray) -> pd.DataFrame:
    """:data:`SIMILAR_COLUMNS` from three aligned arrays (int64, float64, int64)."""
    columns = dict(zip(SIMILAR_COLUMNS, (ids, distance, segments), strict=True))
    return pd.DataFrame(columns, columns=list(SIMILAR_COLUMNS))


def predict_one(
    model: Model, row: Mapping[str, object], reference: pd.DataFrame | None, top: int = 5
) -> Prediction:
    """Assign one customer (a mapping of every feature column to one value).

    ``similar`` holds the ``top`` users of ``reference`` nearest to the customer
    (:func:`similar_users`); none without ``reference``.

    Raises:
        ModelMismatchError: a feature is missing.  DataError: a numeric value is not a number.
    """
    result = assign(model, {name: [value] for name, value in row.items()})
    if len(result) != 1:
        raise DataError("predict_one takes exactly one row")
    comps = result.components[0]
    if reference is not None:
        similar = similar_users(comps, reference, top)
    else:
        none = np.empty(0, dtype=np.int64)
        similar = _similar_frame(none, np.empty(0, dtype=np.float64), none)
    return Prediction(
        segment=int(result.segments[0]),
        components=(float(comps[0]), float(comps[1])),
        distances=tuple(float(d) for d in result.distances[0]),
        unseen_columns=result.unseen_names(0),
        similar=similar,
    )
