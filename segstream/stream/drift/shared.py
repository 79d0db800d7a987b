"""Drift mode's shared centroids: one state in Redis for every worker, and a worker's use of it.

One hash per model version, ``<app_id>:drift:<model version>`` (see ``lua/drift_update.lua`` for
its fields), holds the drifted centres of that version. It is absent until the first update:
the centres are then the trained ones. Keyed by model version, so a new model starts from its
own trained centres, and a restarted worker continues from the drifted ones (Redis keeps them;
the local server runs with ``appendonly yes``).

Guarantees:

- **one state**: every worker assigns with, and learns into, the same hash; updates are
  additive deltas applied by one Lua script, atomically, so concurrent workers never overwrite
  each other's learning; each update bumps the version by one;
- **bounded staleness**: a worker learns from, and assigns with, a state read from Redis at
  most ``max_staleness_s`` (default :data:`MAX_STALENESS_S`, 1 s) before the batch started: a
  busy worker with the state its previous batch's update returned, an idle one re-reads first.
  It learns from the live centres of that state and assigns with its newest epoch;
- **epochs, reproducible assignment**: an update coming ``epoch_s``
  (``SEGSTREAM_DRIFT_EPOCH_S``) or more after the newest epoch publishes the centres it leaves
  as the next epoch (numbered from 1; epoch 0 is the trained centres), an immutable snapshot.
  A batch is assigned with exactly one epoch, which its change events and the users' stored
  state name (``drift_epoch``); the newest ``epochs_kept`` (``SEGSTREAM_DRIFT_EPOCHS_KEPT``)
  epochs stay in Redis, so ``segstream assign --with-drift --epoch E`` (:meth:`DriftStore.epoch`)
  reproduces any of them. Assignment lags learning by at most ``epoch_s`` + ``max_staleness_s``.
  With ``SEGSTREAM_REDIS_MIN_REPLICAS`` > 0 an update returns only once the replicas have it,
  so a failover cannot publish an epoch's number a second time with other centres;
- **bounded drift**: the script holds each centre within ``max_distance`` (PCA units) of its
  trained position; each centre's distance is exported as ``segstream_drift_distance``;
- **no renumbering**: segment ``s`` is always centre ``s``, moved;
- **at most once per event**: a user is learned from when a batch brought fresh events for it
  (a redelivered event is fenced by ``apply``, so it is not learned twice); an update retried
  after a lost reply is recognised by its writer id and sequence number and applied once.

Assignment stays THE training function: :meth:`SharedDrift.assign` calls
:func:`segstream.training.assign.assign` on the model with its centres replaced.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import resources
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from segstream.errors import DriftStateError
from segstream.settings import Settings
from segstream.stream.clients.redis import as_bytes, redis_client
from segstream.stream.clients.retry import redis_call
from segstream.stream.domain.assignment import feature_batch
from segstream.stream.domain.observer import WorkerObserver
from segstream.stream.domain.user import UserState
from segstream.stream.drift.centroids import (
    Centroids,
    Epoch,
    decode_centers,
    drift_distances,
    drifted_model,
    encode_centers,
    learn_deltas,
)
from segstream.stream.state.keys import state_prefix
from segstream.training.artifact import Model
from segstream.training.assign import assign

__all__ = [
    "MAX_STALENESS_S",
    "Contribution",
    "DriftStore",
    "SharedDrift",
    "drift_key",
    "drift_store",
    "load_epochs",
    "shared_drift",
]

log = logging.getLogger(__name__)

EPOCH_S: float = Settings.model_fields["drift_epoch_s"].default
"""Shortest time between two drift epochs by default, in seconds (``SEGSTREAM_DRIFT_EPOCH_S``)."""

EPOCHS_KEPT: int = Settings.model_fields["drift_epochs_kept"].default
"""Epochs kept per model version by default (``SEGSTREAM_DRIFT_EPOCHS_KEPT``)."""

MAX_STALENESS_S = 1.0
"""Oldest, in seconds, the centres a worker assigns with may be (read from Redis that long ago)."""

WRITER_EXPIRY_S = 86_400
"""How long, in seconds, the shared state remembers a writer (one worker process) that has not
updated it: each update removes the fields of writers silent for longer, so restarts do not
grow the state for ever. A day: far longer than a retry of an update can come after it was
applied (the worker's Redis retries back off to 5 s), yet a restart loop of one a minute leaves
at most ~1,440 writers."""


def drift_key(prefix: str, model_version: str) -> str:
    """Name of the hash of ``model_version``'s drifted centroids: ``<prefix>drift:<version>``."""
    return f"{prefix}drift:{model_version}"


def _script_text(name: str) -> str:
    """``lua/<name>.lua`` after ``lua/drift_common.lua`` (the functions both scripts use)."""
    folder = resources.files(__package__).joinpath("lua")
    return (
        folder.joinpath("drift_common.lua").read_text() + folder.joinpath(f"{name}.lua").read_text()
    )


def _epoch_field(number: int) -> str:
    """The hash field holding epoch ``number``'s centres (``lua/drift_update.lua``)."""
    return f"e:{number}"


def _decode(
    model: Model, version: Any, centers: Any, learned: Any, epoch: Any, published: Any
) -> Centroids:
    """Redis's reply (bytes or ints) -> Centroids; the trained ones when the hash is absent.

    ``epoch`` and ``published`` are the newest epoch's number and centres (absent: epoch 0).
    """
    if centers is None:
        return Centroids.trained(model)
    try:
        number = int(epoch or 0)
        assigning = (
            Epoch(model.version, number, decode_centers(published, model.k))
            if number > 0 and published is not None
            else Epoch.trained(model)
        )
        return Centroids(
            model.version,
            int(version),
            decode_centers(centers, model.k),
            int(learned or 0),
            assigning,
        )
    except ValueError as exc:
        raise DriftStateError(f"drift state of model {model.version} is malformed: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Contribution:
    """How many points one writer (worker process) contributed to a state."""

    writer: str
    points: int


class DriftStore:
    """Reads and updates the shared centroids in Redis (one hash per model version).

    Connection errors propagate as redis-py's exceptions (callers retry; every call here is
    safe to repeat). The client must not decode responses.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        *,
        writer_expiry_s: int = WRITER_EXPIRY_S,
        epoch_s: float = EPOCH_S,
        epochs_kept: int = EPOCHS_KEPT,
        replicated: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        """Work through ``client`` on the keys of ``prefix``.

        Args:
            writer_expiry_s: writers silent for longer than this (seconds) are forgotten when
                the next epoch is published (:data:`WRITER_EXPIRY_S`).
            epoch_s: shortest time between two epochs, in seconds (``SEGSTREAM_DRIFT_EPOCH_S``).
            epochs_kept: newest epochs kept per model version (``SEGSTREAM_DRIFT_EPOCHS_KEPT``).
            replicated: ``replicated(key, step)`` returns once the replicas have every write
                of ``key``'s primary (:meth:`RedisState.wait_for_replicas`), and raises
                :class:`~segstream.errors.ReplicaWaitTimeout` otherwise; :meth:`update`
                returns only after it. With ``SEGSTREAM_REDIS_MIN_REPLICAS`` > 0 the worker
                passes it: an epoch published on a primary that crashes before its replica
                has it would otherwise be published again, under the same number with other
                centres, by the promoted replica, while users already name the first one.
        """
        self.replicated = replicated
        self.client = client
        self.prefix = prefix
        self.writer_expiry_s = writer_expiry_s
        self.epoch_s = epoch_s
        self.epochs_kept = epochs_kept
        self._update = client.register_script(_script_text("drift_update"))
        self._reset = client.register_script(_script_text("drift_reset"))

    async def read(self, model: Model) -> Centroids:
        """The current centroids of ``model``'s version (its trained ones if never updated).

        Two reads (the state, then its newest epoch's centres); an epoch published in between
        only makes the state a little older, which the staleness bound allows.

        Raises:
            DriftStateError: the stored state does not fit the model (another k).
        """
        key = drift_key(self.prefix, model.version)
        for _ in range(3):  # an epoch pruned between the two reads: read again
            version, centers, learned, epoch = await self.client.hmget(key, "v", "c", "n", "e")
            if epoch is None or int(epoch) == 0:
                return _decode(model, version, centers, learned, epoch, None)
            published = await self.client.hget(key, _epoch_field(int(epoch)))
            if published is not None:
                return _decode(model, version, centers, learned, epoch, published)
        raise DriftStateError(
            f"drift state of model {model.version}: its newest epoch {int(epoch or 0)} is missing "
            "(pruned as it was read, three times: is SEGSTREAM_DRIFT_EPOCHS_KEPT the same on "
            "every worker?)"
        )

    async def epochs(self, model_version: str) -> list[int]:
        """The epochs of ``model_version`` kept in Redis, oldest first (0 never is: it is the
        trained centres); empty when there is no drift state."""
        fields = await self.client.hkeys(drift_key(self.prefix, model_version))
        return sorted(int(name[2:]) for name in map(as_bytes, fields) if name.startswith(b"e:"))

    async def epoch(self, model: Model, number: int | None = None) -> Epoch:
        """Epoch ``number`` of ``model``'s drift (the newest when ``None``), for reproducing
        the assignments made with it.

        Epoch 0 is the trained centres, available as long as the model has a drift state.

        Raises:
            DriftStateError: no drift state for the model version (drift never ran for it, another
                ``SEGSTREAM_APP_ID`` or Redis), the epoch is not published yet, or it was pruned
                (older than the newest ``SEGSTREAM_DRIFT_EPOCHS_KEPT``); or the stored centres
                do not fit the model.
        """
        key = drift_key(self.prefix, model.version)
        trained, newest = await self.client.hmget(key, "t", "e")
        if trained is None:
            raise DriftStateError(
                f"no drift state for model {model.version} in Redis under app "
                f"{self.prefix.rstrip(':')!r}: workers with SEGSTREAM_DRIFT=river never "
                "assigned with this model version there. Check SEGSTREAM_REDIS_URL, "
                "SEGSTREAM_APP_ID and the model (--model, SEGSTREAM_MODEL_DIR), or use "
                "`segstream assign` without --with-drift"
            )
        newest_number = int(newest or 0)
        wanted = newest_number if number is None else number
        if wanted == 0:
            return Epoch.trained(model)
        if wanted < 0 or wanted > newest_number:
            raise DriftStateError(
                f"drift epoch {wanted} of model {model.version} does not exist: newest is "
                f"{newest_number}"
            )
        centers = await self.client.hget(key, _epoch_field(wanted))
        if centers is None:
            kept = await self.epochs(model.version)
            oldest = f"the oldest kept is {kept[0]}" if kept else "none is kept"
            raise DriftStateError(
                f"drift epoch {wanted} of model {model.version} was pruned ({oldest}, the "
                f"newest {newest_number}): Redis keeps the newest SEGSTREAM_DRIFT_EPOCHS_KEPT "
                "epochs; raise it (or SEGSTREAM_DRIFT_EPOCH_S) on the workers to reproduce "
                "older assignments"
            )
        try:
            return Epoch(model.version, wanted, decode_centers(centers, model.k))
        except ValueError as exc:
            raise DriftStateError(f"drift epoch {wanted} of model {model.version}: {exc}") from exc

    async def update(
        self,
        model: Model,
        deltas: np.ndarray,
        learned: int,
        max_distance: float,
        writer: str,
        sequence: int,
    ) -> Centroids:
        """Add ``deltas`` (k, 2) to the shared centres atomically; return the new state.

        Each centre is held within ``max_distance`` of its trained position. An update with a
        ``sequence`` not above ``writer``'s last applied one is a retry and changes nothing.

        Raises:
            DriftStateError: the stored state was started from other trained centres, or is
                malformed.
        """
        key = drift_key(self.prefix, model.version)
        args = [
            encode_centers(model.centers),
            encode_centers(deltas),
            repr(float(max_distance)),
            str(int(learned)),
            writer,
            str(int(sequence)),
            str(int(self.writer_expiry_s)),
            repr(float(self.epoch_s)),
            str(int(self.epochs_kept)),
        ]
        try:
            version, centers, total, epoch, published = await self._update(keys=[key], args=args)
        except ResponseError as exc:
            raise DriftStateError(f"drift update refused: {exc}") from exc
        if self.replicated is not None:
            # Retried by the caller: the script recognises the update (writer, sequence).
            await self.replicated(key, "drift update")
        return _decode(model, version, centers, total, epoch, published)

    async def contributions(self, model_version: str) -> list[Contribution]:
        """Points learned per writer for ``model_version``, most first.

        Only the writers the state still remembers (updated within :attr:`writer_expiry_s`);
        the total, forgotten writers included, is :attr:`Centroids.learned`.
        """
        fields = await self.client.hgetall(drift_key(self.prefix, model_version))
        points = [
            Contribution(name.decode()[2:], int(value.split()[1]))
            for name, value in zip(map(as_bytes, fields), fields.values(), strict=True)
            if name.startswith(b"w:")
        ]
        return sorted(points, key=lambda c: (-c.points, c.writer))

    async def reset(self, model_version: str) -> bool:
        """Forget ``model_version``'s drift (workers fall back to the trained centres within
        :data:`MAX_STALENESS_S`); True if there was any.

        The trained centres become the next epoch; the epochs before are kept (still
        reproducible), and no epoch number is ever reused (``lua/drift_reset.lua``).
        """
        key = drift_key(self.prefix, model_version)
        return bool(await self._reset(keys=[key], args=[str(int(self.epochs_kept))]))


class SharedDrift:
    """A worker's view of the shared centroids: assigns batches with them, learns into them."""

    def __init__(
        self,
        store: DriftStore,
        *,
        learning_rate: float,
        max_distance: float,
        max_staleness_s: float = MAX_STALENESS_S,
        metrics: WorkerObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        writer: str | None = None,
    ) -> None:
        """Learn at ``learning_rate`` (river's halflife), within ``max_distance`` (PCA units).

        Args:
            writer: this process's id in the shared state (a random one by default).
        """
        self.store = store
        self.learning_rate = learning_rate
        self.max_distance = max_distance
        self.max_staleness_s = max_staleness_s
        self.metrics = metrics
        self.clock = clock
        self.writer = writer or uuid.uuid4().hex[:12]
        self.current: Centroids | None = None
        """The centroids last read or written (``None`` before the first batch)."""
        self.read_at = -float("inf")
        """``clock()`` when :attr:`current` was requested from Redis."""
        self._sequence = 0
        self._models: tuple[Model, Epoch, Model] | None = None

    def _keep(self, model: Model, centroids: Centroids, requested_at: float) -> Centroids:
        previous = self.current
        self.current, self.read_at = centroids, requested_at
        if previous is None or previous.model_version != centroids.model_version:
            log.info(
                "drift: model %s, shared centroids version %d (%d points learned)",
                model.version,
                centroids.version,
                centroids.learned,
            )
        if self.metrics is not None:
            distances = drift_distances(centroids.centers, model.centers)
            self.metrics.set_drift(
                model.version, centroids.version, distances.tolist(), centroids.epoch.number
            )
        return centroids

    async def centroids(self, model: Model) -> Centroids:
        """``model``'s shared centroids, read from Redis unless read < ``max_staleness_s`` ago.

        Raises:
            StateUnavailable: Redis failed after retries.
            DriftStateError: the state does not fit the model.
        """
        current = self.current
        now = self.clock()
        if (
            current is not None
            and current.model_version == model.version
            and now - self.read_at <= self.max_staleness_s
        ):
            return current
        centroids = await redis_call(lambda: self.store.read(model), what="reading the drift state")
        return self._keep(model, centroids, now)

    def model(self, model: Model, epoch: Epoch) -> Model:
        """``model`` with ``epoch``'s centres (cached while neither changes)."""
        cached = self._models
        if cached is not None and cached[0] is model and cached[1] is epoch:
            return cached[2]
        drifted = drifted_model(model, epoch.centers)
        self._models = (model, epoch, drifted)
        return drifted

    async def assign(self, model: Model, states: Sequence[UserState]) -> tuple[np.ndarray, int]:
        """Segments of assignable ``states`` under one epoch of the shared centroids; then learn.

        Returns (n,) int64 segments and the number of the epoch they were assigned with (the
        newest of the state read, see :meth:`centroids`). The users with fresh events in this
        batch (``applied > 0``) are learned from, in order, from the live centres, and the
        moves are added to the shared state (one Redis call); the next batch uses the result.

        Raises:
            StateUnavailable: Redis failed after retries.
            DriftStateError: the state does not fit the model.
            ModelMismatchError, DataError: as :func:`segstream.training.assign.assign`.
        """
        centroids = await self.centroids(model)
        if not states:
            return np.empty(0, dtype=np.int64), centroids.epoch.number
        result = assign(self.model(model, centroids.epoch), feature_batch(states))
        fresh = [i for i, state in enumerate(states) if state.applied > 0]
        if fresh:
            deltas = learn_deltas(centroids.centers, result.components[fresh], self.learning_rate)
            await self.learn(model, deltas, len(fresh))
        return result.segments, centroids.epoch.number

    async def learn(self, model: Model, deltas: np.ndarray, points: int) -> Centroids:
        """Add ``deltas`` (k, 2), learned from ``points`` users, to the shared state.

        Raises:
            StateUnavailable: Redis failed after retries.
            DriftStateError: the state does not fit the model.
        """
        self._sequence += 1
        sequence = self._sequence
        requested_at = self.clock()
        centroids = await redis_call(
            lambda: self.store.update(
                model, deltas, points, self.max_distance, self.writer, sequence
            ),
            what="updating the drift state",
        )
        return self._keep(model, centroids, requested_at)


def drift_store(
    settings: Settings,
    client: aioredis.Redis,
    prefix: str,
    replicated: Callable[[str, str], Awaitable[None]] | None = None,
) -> DriftStore:
    """A :class:`DriftStore` with ``settings``' epochs (``SEGSTREAM_DRIFT_EPOCH_S``,
    ``SEGSTREAM_DRIFT_EPOCHS_KEPT``); ``client`` must not decode responses; ``replicated`` as
    :class:`DriftStore`'s."""
    return DriftStore(
        client,
        prefix,
        epoch_s=settings.drift_epoch_s,
        epochs_kept=settings.drift_epochs_kept,
        replicated=replicated,
    )


async def load_epochs(
    settings: Settings, model: Model, numbers: Sequence[int | None]
) -> list[Epoch]:
    """Epochs ``numbers`` of ``model``'s drift (``None``: the newest), read from the Redis and
    app of ``settings`` (for ``segstream assign --with-drift``).

    Raises:
        StateUnavailable: Redis unreachable after a few tries (naming ``SEGSTREAM_REDIS_URL``).
        DriftStateError: as :meth:`DriftStore.epoch` (no drift state, an epoch not published
            or pruned).
    """
    client = redis_client(settings)
    store = drift_store(settings, client, state_prefix(settings))
    try:
        return [
            await redis_call(
                partial(store.epoch, model, number),
                what="reading the drift epochs",
                attempts=3,
                hint="check SEGSTREAM_REDIS_URL",
            )
            for number in numbers
        ]
    finally:
        await client.aclose()


def shared_drift(
    settings: Settings,
    client: aioredis.Redis,
    prefix: str,
    metrics: WorkerObserver | None = None,
    replicated: Callable[[str, str], Awaitable[None]] | None = None,
) -> SharedDrift | None:
    """The worker's :class:`SharedDrift` as ``settings`` configure it; ``None`` when drift is off.

    Args:
        client: a Redis client that does not decode responses.
        prefix: the app's key prefix (``app.state_prefix``).
        replicated: as :class:`DriftStore`'s (the worker's ``RedisState.wait_for_replicas``).
    """
    if settings.drift == "off":
        return None
    return SharedDrift(
        drift_store(settings, client, prefix, replicated),
        learning_rate=settings.drift_learning_rate,
        max_distance=settings.drift_max_distance,
        metrics=metrics,
    )
