"""Stable segment ids across model versions: number the new segments after the previous ones.

k-means numbers its clusters arbitrarily, so a retrained model's "segment 3" is in general
not the previous model's "segment 3". :func:`align` matches the new centres to the previous
version's and renumbers the new segments so that each carries the id of the previous segment
whose centre is its partner.

**Common space.** Two versions have different scalers and PCA bases, so their centres cannot
be compared as they are. A previous centre (2,) is taken back to the previous model's input
space (``inverse PCA``: ``c @ components + pca_mean``, then ``* scale + mean``: encoded,
unscaled features), its label codes are re-encoded into the new vocabularies (below), and it
is projected with the new model's scaler and PCA (:func:`~segstream.training.assign.project`,
the exact operations of assignment). Both sets of centres are then points of the new PCA
space, where the match is made. (The inverse PCA is the centre's point in the 2-dimensional
subspace the previous model kept; what PCA dropped is not recovered.)

**Re-encoding label codes.** A code is a position in a column's sorted vocabulary, so a
previous code is mapped by value: a previous value also in the new vocabulary goes to its
new index; an absent value goes halfway between the new indices of its sort-order neighbours
(``insertion index - 0.5``), which keeps the map monotonic and the value's place among the
others. Between integer codes (a centre is a mean, not a category) the map is linear, and
beyond the ends it continues with slope 1. Identical vocabularies give the identity map.
The count of absent values per column is recorded (``Lineage.absent_values``).

**Compatible** means: the previous artifact loads with this code, i.e. the same schema
version, the same feature columns in the same order with the same numeric/categorical split,
and two PCA components (:func:`~segstream.training.artifact.load_model` refuses anything else,
and a :class:`~segstream.training.artifact.Model` cannot be built otherwise). Vocabularies may
differ (see above). An incompatible previous version is never aligned to: nothing is
renumbered and the lineage says why (see
:func:`~segstream.training.pipeline.follow_previous`).

**Matching and numbering.** The Hungarian assignment
(:func:`scipy.optimize.linear_sum_assignment`) over the ``k x k_previous`` matrix of
Euclidean distances pairs ``min(k, k_previous)`` new segments with distinct previous ones at
minimum total distance. A matched new segment takes its partner's id when that id is below
``k``; every other new segment (no partner when k grew, or a partner whose id no longer
exists when k shrank) takes the lowest id left free, in k-means' order. So ids are always
``0..k-1``, and when k grows the extra segments get the next ids after the previous ones.
Everything is renumbered together: the rows of ``centers`` and the training labels (hence
``assignments.parquet`` and the report), so :func:`~segstream.training.assign.assign` on the
new model returns the new ids. Cost: O(k^2) distances and an O(k^3) assignment, k <= 10.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from segstream.training.artifact import Model
from segstream.training.assign import project
from segstream.training.lineage import Lineage, SegmentMatch, Transitions
from segstream.training.train import TrainResult

__all__ = [
    "Matching",
    "align",
    "match_centers",
    "previous_centers_in",
    "recode",
    "recode_positions",
    "renumber",
    "transitions",
]


def recode_positions(previous: Sequence[str], vocabulary: Sequence[str]) -> np.ndarray:
    """Where each previous vocabulary value sits on the new code axis: (len(previous),) float64.

    Both vocabularies are sorted in code point order. A value of the new vocabulary is at its
    index; an absent one halfway before the first new value that sorts after it.
    """
    index = {value: i for i, value in enumerate(vocabulary)}
    return np.array(
        [
            float(index[v]) if v in index else bisect.bisect_left(vocabulary, v) - 0.5
            for v in previous
        ],
        dtype=np.float64,
    )


def recode(codes: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Map real-valued previous codes onto the new axis (see :func:`recode_positions`).

    Linear between integer codes, slope 1 below code 0 and above the last code.
    """
    codes = np.asarray(codes, dtype=np.float64)
    last = positions.size - 1
    mapped: np.ndarray = np.interp(codes, np.arange(positions.size, dtype=np.float64), positions)
    mapped = np.where(codes < 0, positions[0] + codes, mapped)
    mapped = np.where(codes > last, positions[last] + (codes - last), mapped)
    return mapped


def previous_centers_in(model: Model, previous: Model) -> tuple[np.ndarray, dict[str, int]]:
    """``previous.centers`` carried into ``model``'s PCA space (see the module docstring).

    Returns:
        ``(centres (k_previous, 2) float64, absent values per categorical column)``.
    """
    scaled = previous.centers @ previous.pca_components + previous.pca_mean
    inputs = scaled * previous.scaler_scale + previous.scaler_mean
    absent = {}
    for column in model.categorical_columns:
        j = model.feature_columns.index(column)
        old, new = previous.vocabularies[column], model.vocabularies[column]
        inputs[:, j] = recode(inputs[:, j], recode_positions(old, new))
        absent[column] = len(set(old) - set(new))
    return project(model, inputs), absent


@dataclass(frozen=True, eq=False)
class Matching:
    """The renumbering of ``k`` new segments after ``k_previous`` previous ones.

    Attributes:
        ids: (k,) int64; ``ids[j]`` is the id given to k-means' cluster ``j`` (a permutation
            of ``0..k-1``).
        partners: (k,) int64; the previous segment matched to cluster ``j``, -1 for none.
        distances: (k,) float64; distance to that partner's centre, NaN for none.
    """

    ids: np.ndarray
    partners: np.ndarray
    distances: np.ndarray

    @property
    def matched(self) -> int:
        """Number of new segments with a previous partner: ``min(k, k_previous)``."""
        return int((self.partners >= 0).sum())


def match_centers(centers: np.ndarray, previous_centers: np.ndarray) -> Matching:
    """Hungarian matching of ``centers`` (k, d) to ``previous_centers`` (k_previous, d).

    Minimises the total Euclidean distance over ``min(k, k_previous)`` distinct pairs, then
    numbers as the module docstring says.
    """
    k = centers.shape[0]
    cost = np.linalg.norm(centers[:, None, :] - previous_centers[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    partners = np.full(k, -1, dtype=np.int64)
    partners[rows] = cols
    distances = np.full(k, np.nan)
    distances[rows] = cost[rows, cols]
    ids = np.where((partners >= 0) & (partners < k), partners, -1)
    free = iter(sorted(set(range(k)) - set(ids[ids >= 0].tolist())))
    for j in range(k):
        if ids[j] < 0:
            ids[j] = next(free)
    return Matching(ids=ids, partners=partners, distances=distances)


def renumber(result: TrainResult, ids: np.ndarray) -> TrainResult:
    """``result`` with k-means' cluster ``j`` renamed ``ids[j]`` everywhere.

    The model's ``centers`` row ``ids[j]`` is the old row ``j``, and the training labels are
    mapped through ``ids``, so ``assign`` on the returned model gives the renumbered labels.
    """
    order = np.argsort(ids)  # order[i] = the old cluster that becomes segment i
    model = dataclasses.replace(result.model, centers=result.model.centers[order])
    segments = ids[result.segments].astype(np.int64)
    return dataclasses.replace(result, model=model, segments=segments)


def align(result: TrainResult, previous: Model) -> tuple[TrainResult, Lineage]:
    """Renumber ``result``'s segments after those of ``previous`` (a loaded, so compatible, model).

    Returns:
        The renumbered result and its lineage (without transitions, see :func:`transitions`).
    """
    model = result.model
    carried, absent = previous_centers_in(model, previous)
    matching = match_centers(model.centers, carried)
    aligned = renumber(result, matching.ids)
    order = np.argsort(matching.ids)
    matches = tuple(
        SegmentMatch(
            segment=i,
            previous=None if matching.partners[j] < 0 else int(matching.partners[j]),
            distance=None if matching.partners[j] < 0 else float(matching.distances[j]),
        )
        for i, j in enumerate(order.tolist())
    )
    kept = sum(m.kept_id for m in matches)
    reason = (
        f"segment ids follow {previous.version}: {matching.matched} of {model.k} segments "
        f"matched to a previous centre (k was {previous.k}), {kept} keep their partner's id"
    )
    lineage = Lineage(previous.version, True, reason, matches, absent_values=absent)
    return aligned, lineage


def transitions(
    previous_segments: np.ndarray, segments: np.ndarray, k_previous: int, k: int
) -> Transitions:
    """The ``k_previous x k`` table of users by previous segment and new segment.

    Both arrays are (n,) int labels of the same users, in ``0..k_previous-1`` and ``0..k-1``.
    """
    cells = np.asarray(previous_segments, dtype=np.int64) * k + np.asarray(segments)
    counts = np.bincount(cells, minlength=k_previous * k).reshape(k_previous, k)
    return Transitions(tuple(tuple(int(n) for n in row) for row in counts))
