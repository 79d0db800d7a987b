"""Online centroid drift (``SEGSTREAM_DRIFT=river``), the pure part: learning and the wire codec.

In drift mode the segment centres move between retrainings toward the users the stream sees,
by river's incremental k-means rule (:class:`river.cluster.KMeans`): each user the batch
learns from moves its nearest centre ``learning_rate`` (river's ``halflife``) of the way toward
the user's point in the model's PCA space. Segment ``s`` stays segment ``s``: a centre moves,
it is never renumbered, added or dropped.

Learning and assigning use two views of the shared state. Learning moves the live centres
(:attr:`Centroids.centers`), which change with every batch of every worker. Assigning uses an
:class:`Epoch`: a numbered, immutable snapshot of the live centres that the shared state
publishes at most once per ``SEGSTREAM_DRIFT_EPOCH_S`` (epoch 0 is the trained centres). A
change event names its epoch (``drift_epoch``), and ``segstream assign --with-drift --epoch E``
assigns the batch with the same snapshot, so a drifted assignment can be checked later.

This module holds what needs no I/O: :func:`learn_deltas` runs river's ``learn_one`` over a
batch's points from the shared centres and returns how far each centre moved (the delta that
:mod:`segstream.stream.drift.shared` adds to the shared state in Redis, atomically, clamped to
``max_distance`` from the trained centres); :func:`drifted_model` is the model with its
centres replaced, which THE assignment function (:func:`segstream.training.assign.assign`)
then uses unchanged; the rest encodes centres for Redis.

Shapes: ``centers`` and deltas are (k, 2) float64 in the PCA space of the model (the space of
``Model.centers``); ``points`` (n, 2) float64, rows of ``Assignment.components``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from river.cluster import KMeans

from segstream.training.artifact import Model

__all__ = [
    "Centroids",
    "Epoch",
    "decode_centers",
    "drift_distances",
    "drifted_model",
    "encode_centers",
    "learn_deltas",
]


def _frozen(values: np.ndarray) -> np.ndarray:
    """A read-only float64 copy of ``values``."""
    frozen = np.array(values, dtype=np.float64, copy=True)
    frozen.setflags(write=False)
    return frozen


@dataclass(frozen=True, eq=False)
class Epoch:
    """Drift epoch ``number`` of a model version: the centres workers assign with.

    Immutable once published: the same number always means the same centres (until pruned).
    ``number`` 0 is the trained centres. ``centers`` is (k, 2) float64, read-only.
    """

    model_version: str
    number: int
    centers: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "centers", _frozen(self.centers))

    @classmethod
    def trained(cls, model: Model) -> Epoch:
        """Epoch 0: the model's own centres."""
        return cls(model.version, 0, model.centers)


@dataclass(frozen=True, eq=False)
class Centroids:
    """The shared centroids of one model version, as Redis held them when read.

    ``version`` counts the updates applied so far (0: none, the trained centres); ``learned``
    the points learned from, by every worker together. ``centers`` is (k, 2) float64, read-only:
    the live centres, which learning moves. ``epoch`` is the newest published snapshot, which
    assignment uses (epoch 0, the trained centres, while none was published).
    """

    model_version: str
    version: int
    centers: np.ndarray
    learned: int
    epoch: Epoch

    def __post_init__(self) -> None:
        object.__setattr__(self, "centers", _frozen(self.centers))

    @classmethod
    def trained(cls, model: Model) -> Centroids:
        """The state before any update: the model's own centres, version 0, epoch 0."""
        return cls(model.version, 0, model.centers, 0, Epoch.trained(model))


def learn_deltas(centers: np.ndarray, points: np.ndarray, learning_rate: float) -> np.ndarray:
    """How far river's k-means moves each centre while learning ``points`` in order.

    A :class:`river.cluster.KMeans` is started at ``centers`` (its random initial positions
    replaced) and fed each point with ``learn_one``: the nearest centre (Euclidean, ties to the
    lowest index) moves ``learning_rate`` of the way toward the point.

    Args:
        centers: (k, 2) the centres to start from.
        points: (n, 2) the points, in the order they are learned.
        learning_rate: river's ``halflife``, in (0, 1].

    Returns:
        (k, 2) float64: final minus initial centres (zeros for a centre no point was nearest).
    """
    centers = np.asarray(centers, dtype=np.float64)
    k, dims = centers.shape
    model = KMeans(n_clusters=k, halflife=learning_rate, p=2, seed=0)
    for i in range(k):
        position = model.centers[i]
        for j in range(dims):
            position[j] = float(centers[i, j])
    for row in np.asarray(points, dtype=np.float64).tolist():
        model.learn_one(dict(enumerate(row)))
    moved: np.ndarray = np.array([[model.centers[i][j] for j in range(dims)] for i in range(k)])
    shifts: np.ndarray = moved - centers
    return shifts


def drift_distances(centers: np.ndarray, trained: np.ndarray) -> np.ndarray:
    """(k,) Euclidean distance of each centre from its trained position (PCA units)."""
    distances: np.ndarray = np.linalg.norm(np.asarray(centers) - np.asarray(trained), axis=1)
    return distances


def drifted_model(model: Model, centers: np.ndarray) -> Model:
    """``model`` with ``centers`` (k, 2) in place of its trained centres; everything else kept.

    Raises:
        ValueError: ``centers`` is not (model.k, 2) of finite values.
    """
    centers = np.asarray(centers, dtype=np.float64)
    if centers.shape != model.centers.shape or not np.isfinite(centers).all():
        raise ValueError(f"drifted centres must be {model.centers.shape} finite values")
    if np.array_equal(centers, model.centers):
        return model
    return dataclasses.replace(model, centers=centers)


def encode_centers(values: np.ndarray) -> str:
    """A (k, 2) array as Redis stores it: space-separated shortest round-trip decimals.

    Text, not JSON: Redis's Lua JSON encoder writes 14 significant digits, which would lose
    precision on every update; ``tonumber``/``%.17g`` and Python's ``repr``/``float`` are exact.
    """
    return " ".join(repr(float(v)) for v in np.asarray(values, dtype=np.float64).ravel())


def decode_centers(text: str | bytes, k: int) -> np.ndarray:
    """The inverse of :func:`encode_centers`: (k, 2) float64.

    Raises:
        ValueError: not 2k numbers.
    """
    if isinstance(text, bytes):
        text = text.decode()
    values = np.array([float(v) for v in text.split()], dtype=np.float64)
    if values.size != 2 * k:
        raise ValueError(f"expected {2 * k} coordinates, got {values.size}")
    return values.reshape(k, 2)
