"""The stream's use of the model: user states -> one batch of features -> segments.

The stream never implements assignment itself: it builds the column-wise feature batch and
calls :func:`segstream.training.assign.assign`, the one vectorised function ``segstream assign``
uses too, so the stream and the batch pipeline agree by construction. One call per batch.

:class:`Assigner` holds the model loaded from ``MODELS/current`` and notices when ``current``
is pointed at another version (checked at most every ``check_every_s`` seconds, a ``readlink``
away), loading the new version before it is used: a model swap needs no worker restart.

Hot reload guarantees (the worker calls :meth:`Assigner.refresh` once per batch, before its
one ``assign`` call, and reads :attr:`Assigner.model` once): a batch is assigned by exactly one
version, never a mix; the first batch starting ``check_every_s`` seconds or more after
``current`` moved uses the new version; per-user state lives in Redis, not in the model, so
nothing is lost or counted twice across the switch. A version that fails to load (the
loader's validation: schema, sha256 of the arrays, shapes, finite values, vocabularies,
lineage) is refused: logged once, counted in ``segstream_model_reload_failures_total``, and
the old model stays in use until ``current`` names a loadable version.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segstream.errors import ArtifactError
from segstream.stream.domain.assignment import assign_states
from segstream.stream.domain.observer import WorkerObserver
from segstream.stream.domain.user import UserState
from segstream.training.artifact import (
    ARRAYS_FILE,
    MODEL_FILE,
    load_model,
    resolve_model_dir,
)

__all__ = ["Assigner"]

log = logging.getLogger(__name__)


class Assigner:
    """The current model of ``model_dir`` (``MODELS``), reloaded when ``current`` moves."""

    def __init__(
        self, model_dir: Path, check_every_s: float = 2.0, metrics: WorkerObserver | None = None
    ) -> None:
        """Load ``model_dir/current`` now.

        Args:
            metrics: told the version in use and every refused one, if given.

        Raises:
            ArtifactError: no loadable model there.
        """
        self.model_dir = Path(model_dir)
        self.check_every_s = check_every_s
        self.metrics = metrics
        self._path = resolve_model_dir(self.model_dir)
        self.model = load_model(self._path)
        self._checked = time.monotonic()
        self.refused: str | None = None
        """Why the version ``current`` names was refused, while it is; else ``None``."""
        self._refused_signature: tuple[object, ...] | None = None
        if metrics is not None:
            metrics.set_model(self.model.version)

    @property
    def version(self) -> str:
        """Version of the model in use."""
        return self.model.version

    def refresh(self) -> bool:
        """Reload if ``current`` now names another version; True when the model changed.

        A version that fails to load is refused and the old model kept: a bad deploy must not
        stop the stream. It is logged and counted once, not at every check, until ``current``
        names another version or the refused one's files change (a copy that was still being
        written, then completed, is loaded then).
        """
        now = time.monotonic()
        if now - self._checked < self.check_every_s:
            return False
        self._checked = now
        try:
            path = resolve_model_dir(self.model_dir)
        except (ArtifactError, OSError) as exc:
            self._refuse((str(exc),), exc)
            return False
        if path == self._path:
            self.refused, self._refused_signature = None, None
            return False
        signature = (path, _mtime_ns(path / MODEL_FILE), _mtime_ns(path / ARRAYS_FILE))
        if signature == self._refused_signature:
            return False
        try:
            model = load_model(path)
        except (ArtifactError, OSError) as exc:
            self._refuse(signature, exc)
            return False
        log.info("model %s replaced by %s", self.version, model.version)
        self._path, self.model = path, model
        self.refused, self._refused_signature = None, None
        if self.metrics is not None:
            self.metrics.set_model(model.version)
        return True

    def _refuse(self, signature: tuple[object, ...], exc: BaseException) -> None:
        if signature == self._refused_signature:
            return
        self.refused, self._refused_signature = str(exc), signature
        log.error("refused the new model, keeping %s: %s", self.version, exc)
        if self.metrics is not None:
            self.metrics.model_reload_failed()

    def assign(self, states: Sequence[UserState]) -> np.ndarray:
        """Segments of ``states`` (all assignable) under the current model."""
        return assign_states(self.model, states)


def _mtime_ns(path: Path) -> int:
    """``path``'s modification time in ns, -1 if it cannot be read (missing file)."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1
