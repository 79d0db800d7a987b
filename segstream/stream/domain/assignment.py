"""Assigning users from their stored state: the bridge from :class:`UserState` to
:func:`segstream.training.assign.assign`, the one vectorised assignment function."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segstream.stream.domain.user import UserState
from segstream.training.artifact import (
    Model,
)
from segstream.training.assign import assign
from segstream.training.features import FEATURE_COLUMNS

__all__ = ["assign_states", "feature_batch"]


def feature_batch(states: Sequence[UserState]) -> dict[str, list[object]]:
    """Column-wise features of assignable ``states``, by FEATURE_COLUMNS name, in row order."""
    rows = [state.features() for state in states]
    return {column: [row[column] for row in rows] for column in FEATURE_COLUMNS}


def assign_states(model: Model, states: Sequence[UserState]) -> np.ndarray:
    """(n,) int64 segment of each assignable state, with one :func:`assign` call.

    Raises:
        ModelMismatchError, DataError: as :func:`segstream.training.assign.assign`.
    """
    if not states:
        return np.empty(0, dtype=np.int64)
    return assign(model, feature_batch(states)).segments
