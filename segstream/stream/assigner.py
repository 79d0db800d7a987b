"""The stream's use of the model: user states -> one batch of features -> segments.

The stream never implements assignment itself: it builds the column-wise feature batch and
calls :func:`segstream.training.assign.assign`, the one vectorised function ``segstream assign``
uses too, so the stream and the batch pipeline agree by construction. One call per batch.

:class:`Assigner` holds the model loaded from ``MODELS/current`` and notices when ``current``
is pointed at another version (checked at most every ``check_every_s`` seconds, a ``readlink``
away), loading the new version before it is used: a model swap needs no worker restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segstream.errors import ArtifactError
from segstream.stream.state import UserState
from segstream.training.artifact import Model, load_model, resolve_model_dir
from segstream.training.assign import assign
from segstream.training.features import FEATURE_COLUMNS

__all__ = ["Assigner", "assign_states", "feature_batch"]

log = logging.getLogger(__name__)


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


class Assigner:
    """The current model of ``model_dir`` (``MODELS``), reloaded when ``current`` moves."""

    def __init__(self, model_dir: Path, check_every_s: float = 2.0) -> None:
        """Load ``model_dir/current`` now.

        Raises:
            ArtifactError: no loadable model there.
        """
        self.model_dir = Path(model_dir)
        self.check_every_s = check_every_s
        self._path = resolve_model_dir(self.model_dir)
        self.model = load_model(self._path)
        self._checked = time.monotonic()

    @property
    def version(self) -> str:
        """Version of the model in use."""
        return self.model.version

    def refresh(self) -> bool:
        """Reload if ``current`` now names another version; True when the model changed.

        A version that fails to load is logged and the old model kept: a bad deploy must not
        stop the stream.
        """
        now = time.monotonic()
        if now - self._checked < self.check_every_s:
            return False
        self._checked = now
        try:
            path = resolve_model_dir(self.model_dir)
            if path == self._path:
                return False
            model = load_model(path)
        except (ArtifactError, OSError) as exc:
            log.error("keeping model %s: cannot load %s: %s", self.version, self.model_dir, exc)
            return False
        log.warning("model %s replaced by %s", self.version, model.version)
        self._path, self.model = path, model
        return True

    def assign(self, states: Sequence[UserState]) -> np.ndarray:
        """Segments of ``states`` (all assignable) under the current model."""
        return assign_states(self.model, states)
