"""Choosing k from the elbow curve: a Kneedle-style knee of the SSE-versus-k curve.

Method (after Satopää et al., "Finding a 'Kneedle' in a Haystack", 2011, without smoothing):
normalise k and SSE to [0, 1], draw the chord from the first point to the last, and pick the
k whose point lies farthest *below* the chord (SSE falls, so a convex elbow bends below it).
For a fixed chord the perpendicular distance is proportional to the vertical one, so the
vertical gap is used. Ties go to the smaller k. A curve with no point below the chord (a
straight line, a concave or a flat curve) has no knee: the smallest k is returned, the
simplest segmentation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["KNEE_METHOD", "find_knee"]

KNEE_METHOD = "kneedle: farthest point below the chord of the normalised SSE curve"
"""How :func:`find_knee` picks k, recorded in the model."""

_FLAT = 1e-9  # gaps below this (on a [0, 1] scale) are rounding noise, not a bend


def find_knee(ks: Sequence[int], sse: Sequence[float]) -> int:
    """The knee of a decreasing SSE curve.

    Args:
        ks: increasing numbers of clusters, e.g. 2..10.
        sse: the within-cluster sum of squares for each k (same length, finite).

    Returns:
        One of ``ks``: the knee, or ``ks[0]`` when the curve has no knee or fewer than 3 points.

    Raises:
        ValueError: empty or mismatched inputs, ks not increasing, or non-finite SSE.
    """
    k = np.asarray(ks, dtype=np.float64)
    y = np.asarray(sse, dtype=np.float64)
    if k.size == 0 or k.shape != y.shape:
        raise ValueError(f"need equally long, non-empty ks and sse, got {k.size} and {y.size}")
    if not np.isfinite(y).all() or (np.diff(k) <= 0).any():
        raise ValueError("ks must increase and sse must be finite")
    if k.size < 3:
        return int(ks[0])
    x = (k - k[0]) / (k[-1] - k[0])
    span = y.max() - y.min()
    if span == 0:
        return int(ks[0])
    yn = (y - y.min()) / span
    chord = yn[0] + (yn[-1] - yn[0]) * x
    gap = chord - yn
    best = int(np.argmax(gap))  # first maximum: ties go to the smaller k
    if gap[best] <= _FLAT:
        return int(ks[0])
    return int(ks[best])
