"""The training commands' work, from a data source to files: train, then the version's files.

- :func:`train_to_directory`: read features, fit, and write ``MODELS/<version>/`` (model,
  ``report.html``, ``assignments.parquet``) through a staging directory renamed into place,
  then repoint ``MODELS/current`` atomically. When a previous version exists (``MODELS/current``
  or an explicit one), the new segments are numbered after its segments
  (:mod:`segstream.training.align`) and the version records its lineage, including how the
  training users move between the previous model's segments and the new ones.
- :func:`write_parquet`: a frame written to a file atomically.

Predicting one customer and the assignments a version stores are
:mod:`segstream.training.prediction`'s, apart from this module so that a worker's HTTP side
can predict without importing what fitting needs (scikit-learn, SciPy, the report's plots).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

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
)
from segstream.training.features import ID_COLUMN
from segstream.training.lineage import Lineage
from segstream.training.prediction import ASSIGNMENTS_FILE, assignment_frame
from segstream.training.report import SegmentProfile, profile_segments, render_html
from segstream.training.train import Progress, TrainConfig, TrainResult, fit

__all__ = [
    "REPORT_FILE",
    "PreviousVersion",
    "TrainOutcome",
    "find_previous",
    "follow_previous",
    "train_to_directory",
    "write_parquet",
]

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"


@dataclass(frozen=True, eq=False)
class TrainOutcome:
    """What :func:`train_to_directory` made: the version directory, the fit, the profiles."""

    version_dir: Path
    result: TrainResult
    profiles: tuple[SegmentProfile, ...]


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
