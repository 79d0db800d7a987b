"""The training commands' work, from a data source to files: train, assign, predict.

- :func:`train_to_directory`: read features, fit, and write ``MODELS/<version>/`` (model,
  ``report.html``, ``assignments.parquet``) through a staging directory renamed into place,
  then repoint ``MODELS/current`` atomically. When a previous version exists (``MODELS/current``
  or an explicit one), the new segments are numbered after its segments
  (:mod:`segstream.training.align`) and the version records its lineage, including how the
  training users move between the previous model's segments and the new ones.
- :func:`assignment_frame`: the batch reference the stream must match (user_id, segment,
  component_1, component_2, unseen).
- :func:`predict_one` / :func:`similar_users`: one new customer's segment, distances and the
  most similar existing users: the nearest by Euclidean distance in the model's component
  space, the metric k-means assigns by (the notebook's cosine similarity ignored the distance
  from the origin and ranked users of other segments first). The existing users are the
  training users stored in ``assignments.parquet`` of the model version, or, with
  ``--data``/``--db``, every user of that data assigned afresh.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from segstream.errors import ArtifactError, DataError
from segstream.training.align import align, transitions
from segstream.training.artifact import (
    CURRENT_LINK,
    Model,
    load_model,
    publish_current,
    resolve_model_dir,
    save_model,
)
from segstream.training.assign import assign
from segstream.training.data import (
    DataSource,
    read_checked_features,
    read_exclusions,
    read_features,
)
from segstream.training.features import ID_COLUMN
from segstream.training.lineage import Lineage
from segstream.training.report import SegmentProfile, profile_segments, render_html
from segstream.training.train import Progress, TrainConfig, TrainResult, fit

__all__ = [
    "ASSIGNMENTS_FILE",
    "REPORT_FILE",
    "SIMILAR_COLUMNS",
    "Prediction",
    "PreviousVersion",
    "TrainOutcome",
    "assign_frame",
    "assignment_frame",
    "find_previous",
    "follow_previous",
    "predict_one",
    "reference_users",
    "similar_users",
    "train_to_directory",
    "write_parquet",
]

log = logging.getLogger(__name__)

ASSIGNMENTS_FILE = "assignments.parquet"
REPORT_FILE = "report.html"
SIMILAR_COLUMNS: tuple[str, ...] = (ID_COLUMN, "distance", "segment")
"""Columns of :attr:`Prediction.similar`, in order."""


@dataclass(frozen=True, eq=False)
class TrainOutcome:
    """What :func:`train_to_directory` made: the version directory, the fit, the profiles."""

    version_dir: Path
    result: TrainResult
    profiles: tuple[SegmentProfile, ...]


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


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` via a temporary file renamed into place.

    Raises:
        DataError: the file cannot be written (the temporary file is removed).
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), partial)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from exc


@dataclass(frozen=True, eq=False)
class PreviousVersion:
    """The version a new one follows: its name and model, or why this code cannot load it."""

    version: str
    model: Model | None
    problem: str | None = None


def find_previous(models_dir: Path, previous: Path | None = None) -> PreviousVersion | None:
    """The version at ``previous`` if given, else at ``models_dir/current``; None if neither.

    A version that does not load (another schema, other feature columns, a corrupt file) is
    returned with ``model=None`` and the loader's message as ``problem``, named after its
    directory.

    Raises:
        ArtifactError: ``previous`` was given and does not exist.
    """
    if previous is None:
        previous = models_dir / CURRENT_LINK
        if not previous.exists():
            return None
    directory = resolve_model_dir(Path(previous))
    try:
        model = load_model(directory)
    except ArtifactError as exc:
        return PreviousVersion(version=directory.name, model=None, problem=str(exc))
    return PreviousVersion(version=model.version, model=model)


def follow_previous(
    result: TrainResult, previous: PreviousVersion | None, align_ids: bool = True
) -> TrainResult:
    """``result`` renumbered after ``previous`` (when possible and ``align_ids``), with lineage.

    Whenever the previous model loads, the lineage also holds the transitions: this version's
    training users assigned by the previous model versus by this one.
    """
    if previous is None:
        lineage = Lineage(None, False, "first version: no previous version to align to")
    elif previous.model is None:
        lineage = Lineage(
            previous.version,
            False,
            f"not aligned to {previous.version}: it cannot be used ({previous.problem})",
        )
    elif not align_ids:
        reason = f"not aligned to {previous.version}: alignment switched off"
        lineage = Lineage(previous.version, False, reason)
    else:
        result, lineage = align(result, previous.model)
    if previous is not None and previous.model is not None:
        before = assign(previous.model, result.features).segments
        table = transitions(before, result.segments, previous.model.k, result.model.k)
        lineage = dataclasses.replace(lineage, transitions=table)
    return dataclasses.replace(result, model=dataclasses.replace(result.model, lineage=lineage))


def train_to_directory(
    source: DataSource,
    models_dir: Path,
    config: TrainConfig,
    progress: Progress | None = None,
    previous: Path | None = None,
    align_ids: bool = True,
) -> TrainOutcome:
    """Train on ``source`` and publish the result as ``models_dir/current``.

    The segments are numbered after the previous version's (``previous``, else
    ``models_dir/current`` if it exists) unless ``align_ids`` is False or that version is
    incompatible; either way the new version's ``lineage`` says what happened.

    Raises:
        DataError, ServiceError: reading the data failed, or it cannot be segmented.
        ArtifactError: ``models_dir/current`` is not a symlink, or ``previous`` was given and
            does not exist.
    """
    report = progress or (lambda step, done, total: None)
    earlier = find_previous(models_dir, previous)  # before the fit: a bad path fails fast
    report("reading features", 0, 2)
    checked = read_checked_features(source)
    features = checked.frame
    report("reading features", 1, 2)
    exclusions = dataclasses.replace(  # who read_features left out, for the report
        read_exclusions(source), refused=checked.refused, refused_examples=checked.examples
    )
    report("reading features", 2, 2)
    result = fit(features, config, progress)
    extra = {**result.model.extra, "exclusions": exclusions.to_json()}
    result = dataclasses.replace(result, model=dataclasses.replace(result.model, extra=extra))
    report("aligning segment ids", 0, 1)
    result = follow_previous(result, earlier, align_ids)
    report("aligning segment ids", 1, 1)
    model = result.model
    models_dir.mkdir(parents=True, exist_ok=True)
    suffix = 1
    while (models_dir / model.version).exists():  # same data, same second: keep both
        suffix += 1
        model = dataclasses.replace(result.model, version=f"{result.model.version}-{suffix}")
    result = dataclasses.replace(result, model=model)

    report("writing model and report", 0, 1)
    staging = models_dir / f".staging-{model.version}-{os.getpid()}"
    try:
        save_model(model, staging)
        stored = assignment_frame(result.features[ID_COLUMN], result.segments, result.components)
        write_parquet(stored, staging / ASSIGNMENTS_FILE)
        profiles = profile_segments(result.features, result.segments, model.k)
        html_text = render_html(model, profiles, result.components, result.segments)
        (staging / REPORT_FILE).write_text(html_text, encoding="utf-8")
        version_dir = models_dir / model.version
        os.rename(staging, version_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    publish_current(models_dir, version_dir)
    report("writing model and report", 1, 1)
    log.info("model %s written to %s (k=%d)", model.version, version_dir, model.k)
    return TrainOutcome(version_dir=version_dir, result=result, profiles=profiles)


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
