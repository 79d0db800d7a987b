"""The model behind the API: the current version, its training users, and the two answers.

Both answers go through :func:`segstream.training.prediction.predict_one`, the function
``segstream predict`` calls, which calls :func:`segstream.training.assign.assign`, the one the
worker uses: the API's segment and distances are the stream's and the batch pipeline's.

- ``POST /predict``: a new customer's features -> segment, distances to every centre, and the
  most similar existing users (the training users of the model version nearest in component
  space, from its ``assignments.parquet``; none when that file is missing or unreadable).
  Reading that file and searching it are O(users) work, done in a worker thread
  (:meth:`ServingModel.predict`), so a large reference set never stalls the event loop the
  Faust worker shares with the API;
- ``GET /users/{id}``: a stored user's features -> distances to every centre under the model
  in use (the stored segment is the one the worker published).

:class:`ServingModel` follows ``MODELS/current`` through an
:class:`~segstream.stream.worker.assigner.Assigner` (the worker's, when the API is served by the
worker, so both always use the same version), creating one when there is none and retrying
every few seconds while no model is loadable: the API starts, and reports not ready, before
the first model is trained.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from segstream.errors import ArtifactError
from segstream.stream.domain.user import UserState
from segstream.stream.worker.assigner import Assigner
from segstream.training.artifact import Model
from segstream.training.prediction import Prediction, predict_one, reference_users

__all__ = ["ServingModel"]

log = logging.getLogger(__name__)


class ServingModel:
    """The current model and its reference users; see the module docstring."""

    def __init__(
        self,
        model_dir: Path,
        *,
        assigner: Assigner | None = None,
        retry_every_s: float = 2.0,
    ) -> None:
        """``assigner``: the worker's own, to share; otherwise one is made on first use."""
        self.model_dir = Path(model_dir)
        self.retry_every_s = retry_every_s
        self._assigner = assigner
        self._error: str | None = None
        self._last_try = -1e18
        self._reference: tuple[str, pd.DataFrame | None] | None = None
        # predict() reads the reference in worker threads: one reads a version's file at a time.
        self._reference_lock = threading.Lock()

    def current(self) -> Model:
        """The model in use, reloaded if ``current`` moved.

        Raises:
            ArtifactError: no loadable model, with the reason.
        """
        if self._assigner is None:
            now = time.monotonic()
            if now - self._last_try >= self.retry_every_s:
                self._last_try = now
                try:
                    self._assigner = Assigner(self.model_dir)
                except ArtifactError as exc:
                    self._error = str(exc)
            if self._assigner is None:
                raise ArtifactError(self._error or f"no model in {self.model_dir}")
        self._assigner.refresh()
        return self._assigner.model

    def reference(self, model: Model) -> pd.DataFrame | None:
        """Training users of ``model``'s version (cached per version); ``None`` if unreadable.

        Blocking (reads a Parquet file on a version's first use); safe from several threads.
        """
        with self._reference_lock:
            if self._reference is None or self._reference[0] != model.version:
                try:
                    users: pd.DataFrame | None = reference_users(
                        model, self.model_dir / model.version, None
                    )
                except ArtifactError as exc:
                    log.warning("no similar users for model %s: %s", model.version, exc)
                    users = None
                self._reference = (model.version, users)
            return self._reference[1]

    async def predict(
        self, features: Mapping[str, object], top: int = 5
    ) -> tuple[Model, Prediction]:
        """A new customer's prediction and the model that made it.

        The model is resolved on the event loop (the :class:`Assigner` may be the worker's,
        which only the loop touches); the reference users are read and searched in a thread.

        Raises:
            ArtifactError: no model.  ModelMismatchError, DataError: as ``predict_one``.
        """
        model = self.current()
        return model, await asyncio.to_thread(self._predict, model, features, top)

    def _predict(self, model: Model, features: Mapping[str, object], top: int) -> Prediction:
        reference = self.reference(model) if top > 0 else None
        return predict_one(model, features, reference, top)

    def describe(self, state: UserState) -> tuple[Model, Prediction]:
        """Distances of an assignable stored user to every centre of the model in use.

        Raises:
            ArtifactError: no model.  DataError: the stored features are not assignable.
        """
        model = self.current()
        return model, predict_one(model, state.features(), None, 0)
