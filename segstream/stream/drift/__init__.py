"""Drift mode: k-means centres that follow the stream (river), shared by every worker via Redis."""

from __future__ import annotations

from segstream.stream.drift.centroids import (
    Centroids,
    decode_centers,
    drift_distances,
    drifted_model,
    encode_centers,
    learn_deltas,
)
from segstream.stream.drift.shared import (
    MAX_STALENESS_S,
    Contribution,
    DriftStore,
    SharedDrift,
    drift_key,
    shared_drift,
)

__all__ = [
    "MAX_STALENESS_S",
    "Centroids",
    "Contribution",
    "DriftStore",
    "SharedDrift",
    "decode_centers",
    "drift_distances",
    "drift_key",
    "drifted_model",
    "encode_centers",
    "learn_deltas",
    "shared_drift",
]
