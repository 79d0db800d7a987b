"""``segstream reassign``: every user in Redis re-assigned with the current model, in batches.

After a new model version is published (``MODELS/current`` moved) the workers use it for the
users they see next; the others keep their old segment until their next event. ``reassign``
walks every user hash (SCAN, ``batch_size`` keys a page) and, per batch, does what a worker
does for a batch, with the worker's own pieces:

1. reads the users' states with the worker's ``apply`` script, given no events (a read that
   returns exactly what a worker's batch would see: the features and their version, the
   segment, model version, change count and pending outbox);
2. one :func:`~segstream.training.assign.assign` call (through :class:`Assigner`, or the shared
   drifted centroids in drift mode);
3. :func:`plan_reassign` (pure) decides, per assignable user, by the worker's own rule
   (:func:`~segstream.stream.domain.changes.plan_settle`), and the worker's ``settle`` script writes
   it:

   - **segment changed**: a segment-change event with the new model_version is queued in the
     user's outbox, its event_id derived from the user's next change number as the worker's
     are; its ``source`` is :data:`REASSIGN_SOURCE` (no input event caused it) and its
     ``occurred_at`` the time the run started;
   - **same segment, other model version**: no event. Segment ids are stable across versions
     (training aligns them), so the segment still means the same customers and downstream has
     nothing to learn; only the stored model version is updated, so that a rerun does nothing
     for the user. ``user-segments`` keeps the model_version of the user's last *change*;
   - **same segment and version**: nothing (a rerun, or a user a worker already re-assigned).

4. every pending change of those users is published to ``segment-changes``, oldest first, and
   each user's newest to ``user-segments`` (:func:`~segstream.stream.domain.changes.outbox_outputs`,
   the worker's publisher), and removed from the outboxes once acknowledged.

Safe while workers run: every write is a compare-and-set against what step 1 read, the
features' version included (hash field ``fv``, which every event that changes a user's
features bumps, even one that leaves the segment as it was). So a user a worker updated in
between, or merely applied an event to, is left as the worker set it: counted as a conflict,
and the worker's own write, from the new features, stands. The worker used its own model
version, so rerun once every worker has switched if any were still on the old one
(``segstream_model_info``). SCAN sees every user that exists for the whole walk; a user
created meanwhile is assigned by a worker anyway.

Safe to interrupt and rerun: a user already re-assigned is "same segment and version" and gets
nothing; a change queued but not yet published when the run stopped is still in the outbox and
is published by the rerun (or by a worker with the user's next event) with the same bytes and
event_id. A rerun therefore emits nothing new. One caveat, shared with a worker during a
rebalance: if a worker publishes a newer change of the same user between this command's queueing
and its publishing of an older one, ``user-segments`` can briefly hold the older value until
the user's next change (``segment-changes`` consumers deduplicate on event_id and are unaffected).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import msgspec
import numpy as np

from segstream.errors import ServiceError
from segstream.settings import Settings
from segstream.stream.clients.kafka import output_producer
from segstream.stream.clients.redis import redis_client
from segstream.stream.clients.retry import KAFKA_TRANSIENT, redis_call
from segstream.stream.domain.changes import outbox_outputs, plan_settle
from segstream.stream.domain.events import Source
from segstream.stream.domain.topics import Topics
from segstream.stream.domain.user import Settle, UserState
from segstream.stream.drift.shared import SharedDrift, shared_drift
from segstream.stream.kafka.publisher import AiokafkaSender, Sender
from segstream.stream.kafka.topics import ensure_topics
from segstream.stream.state.keys import state_prefix, user_pattern
from segstream.stream.state.keyspace import primaries, scan_page
from segstream.stream.state.populations import read_populations
from segstream.stream.state.store import RedisState
from segstream.stream.worker.assigner import Assigner
from segstream.training.artifact import Model

__all__ = [
    "REASSIGN_SOURCE",
    "ReassignPlan",
    "ReassignReport",
    "Reassigner",
    "plan_reassign",
    "reassign_all",
    "user_id_of",
]

log = logging.getLogger(__name__)

REASSIGN_SOURCE = Source("segstream.reassign", 0, 0)
"""The ``source`` of the changes ``reassign`` makes: no input event caused them."""


@dataclass(frozen=True, slots=True)
class ReassignPlan:
    """What one batch needs: its ``settle`` rows, and how many users fall in each case."""

    settles: list[Settle]
    """One per user whose segment changed (with its change event), who keeps its segment
    under another model version (the version only), or who has pending changes (a read)."""
    changed: int
    """Users whose segment changed."""
    version_only: int
    """Users who keep their segment; only the model version (and, drift mode, the drift epoch,
    so every such user is counted here then) is stored."""
    unchanged: int
    """Users already at this segment and model version."""


def plan_reassign(
    states: Sequence[UserState],
    segments: np.ndarray,
    model_version: str,
    occurred_at: str,
    drift_epoch: int | None = None,
) -> ReassignPlan:
    """Decide a batch of re-assignments (pure); see the module docstring for the rules.

    Args:
        states: the users of the batch, as ``apply`` returned them (any, assignable or not).
        segments: (n,) the new segment of each *assignable* state, in order.
        occurred_at: RFC 3339 time stamped on the changes (the run's start).
        drift_epoch: the drift epoch ``segments`` were assigned with (``None``: drift off).
    """
    settles: list[Settle] = []
    changed = version_only = unchanged = 0
    assignable = (state for state in states if state.assignable)
    for state, segment in zip(assignable, segments.tolist(), strict=True):
        settle = plan_settle(
            state,
            segment,
            model_version,
            source=REASSIGN_SOURCE,
            occurred_at=occurred_at,
            drift_epoch=drift_epoch,
        )
        if settle is not None:
            settles.append(settle)
        if settle is None or not settle.writes:
            unchanged += 1
        elif settle.change is not None:
            changed += 1
        else:
            version_only += 1
    return ReassignPlan(settles, changed, version_only, unchanged)


def user_id_of(key: bytes, prefix: str) -> int | None:
    """The user id of a user hash's key ``<prefix>{u:<id>}``; ``None`` for any other key."""
    head = f"{prefix}{{u:".encode()
    if not key.startswith(head) or not key.endswith(b"}"):
        return None
    digits = key[len(head) : -1]
    return int(digits) if digits.isdigit() else None


@dataclass
class ReassignReport:
    """What a run did (figures over the users visited; SCAN may visit a user twice).

    Every assignable user is counted once a visit in exactly one of changed, version_only,
    unchanged and conflicts.
    """

    model_version: str
    users: int = 0
    """User hashes visited."""
    assignable: int = 0
    changed: int = 0
    """Users whose segment changed: one segment-change event queued each."""
    version_only: int = 0
    """Users who kept their segment; only the stored model version was updated."""
    unchanged: int = 0
    """Users already at this segment and model version (nothing done)."""
    conflicts: int = 0
    """Users a worker updated, or applied an event to, between this run's read and write: left
    as the worker set them."""
    published: int = 0
    """Change events published, re-sends of changes pending from before included."""
    batches: int = 0
    seconds: float = 0.0
    other_versions_before: dict[str, int] = field(default_factory=dict)
    """Users under each other model version when the run started."""

    def as_dict(self) -> dict[str, Any]:
        """The figures as plain JSON-ready values."""
        return {
            name: getattr(self, name)
            for name in (
                "model_version", "users", "assignable", "changed", "version_only", "unchanged",
                "conflicts", "published", "batches", "seconds", "other_versions_before",
            )
        }  # fmt: skip


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Reassigner:
    """Re-assigns every user of one app's Redis state; see the module docstring."""

    def __init__(
        self,
        state: RedisState,
        assigner: Assigner,
        sender: Sender,
        topics: Topics,
        *,
        drift: SharedDrift | None = None,
        batch_size: int = 1000,
        attempts: int | None = None,
    ) -> None:
        """Work on ``state``'s users with ``assigner``'s model (and ``drift``'s centres, if any).

        Args:
            batch_size: users per batch: one read, one assign, one settle, one publish.
            attempts: give up on a failing Redis call after this many tries
                (StateUnavailable);
                ``None`` retries without limit, as a worker does.
        """
        self.state = state
        self.assigner = assigner
        self.sender = sender
        self.topics = topics
        self.drift = drift
        self.batch_size = batch_size
        self.attempts = attempts

    async def _redis(self, what: str, operation: Callable[[], Any]) -> Any:
        return await redis_call(operation, what=what, attempts=self.attempts)

    async def count_users(self) -> tuple[int, dict[str, int]]:
        """User hashes now, and users per model version (for the progress bar and report)."""
        populations = await self._redis(
            "counting users",
            lambda: read_populations(
                self.state.client, self.state.prefix, cluster=self.state.cluster
            ),
        )
        per_version = {
            version: sum(counts.values()) for version, counts in populations.by_version.items()
        }
        return populations.users, per_version

    async def run(
        self,
        progress: Callable[[int], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> ReassignReport:
        """Re-assign every user; ``progress(n)`` after each batch of ``n`` users.

        ``on_start(users)`` is called first with the number of user hashes (the maintained
        population counters, :func:`~segstream.stream.state.populations.read_populations`).
        The walk is one SCAN per primary on a Redis Cluster.

        Raises:
            StateUnavailable: Redis failed after retries.
            DriftStateError: the drift state does not fit the model.
            ModelMismatchError, DataError: as :func:`segstream.training.assign.assign`.
        """
        started = time.perf_counter()
        model = self.assigner.model
        report = ReassignReport(model_version=model.version)
        users, per_version = await self.count_users()
        if on_start is not None:
            on_start(users)
        report.other_versions_before = {v: n for v, n in per_version.items() if v != model.version}
        occurred_at = _now_rfc3339()
        client, prefix = self.state.client, self.state.prefix
        pattern = user_pattern(prefix)
        batch: list[int] = []
        nodes = await self._redis("finding the primaries", lambda: primaries(client))
        for node in nodes:
            cursor = 0
            while True:
                cursor, keys = await self._redis(
                    "scanning users",
                    partial(
                        scan_page,
                        client,
                        node,
                        cursor,
                        match=pattern,
                        count=self.batch_size,
                        type_="hash",
                    ),
                )
                for key in keys:
                    user_id = user_id_of(key, prefix)
                    if user_id is not None:
                        batch.append(user_id)
                while len(batch) >= self.batch_size:
                    page, batch = batch[: self.batch_size], batch[self.batch_size :]
                    await self._batch(model, page, occurred_at, report)
                    if progress is not None:
                        progress(len(page))
                if cursor == 0:
                    break
        if batch:
            await self._batch(model, batch, occurred_at, report)
            if progress is not None:
                progress(len(batch))
        report.seconds = time.perf_counter() - started
        log.info("reassign done: %s", msgspec.json.encode(report.as_dict()).decode())
        return report

    async def _batch(
        self, model: Model, user_ids: list[int], occurred_at: str, report: ReassignReport
    ) -> None:
        # No events: apply.lua then only reads each user's state, as a worker's batch sees it.
        by_user: dict[int, tuple[()]] = dict.fromkeys(user_ids, ())
        states = await self._redis("reading users", lambda: self.state.apply(by_user))
        assignable = [s for s in states if s.assignable]
        drift_epoch: int | None = None
        if self.drift is None:
            segments = self.assigner.assign(assignable)
        else:
            segments, drift_epoch = await self.drift.assign(model, assignable)
        plan = plan_reassign(states, segments, model.version, occurred_at, drift_epoch)
        settled = await self._redis(
            "storing segments", lambda: self.state.settle_outcome(plan.settles)
        )
        pending = settled.pending
        outputs = outbox_outputs(pending, self.topics.segment_changes, self.topics.user_segments)
        await self.sender.publish(outputs)
        await self._redis("clearing outboxes", lambda: self.state.clear(pending))
        report.batches += 1
        report.users += len(user_ids)
        report.assignable += len(assignable)
        # A refused row is a conflict, not the change or version update it was planned as.
        refused_changes = sum(
            1 for s in plan.settles if s.change is not None and s.user_id in settled.refused
        )
        report.changed += plan.changed - refused_changes
        report.version_only += plan.version_only - (len(settled.refused) - refused_changes)
        report.unchanged += plan.unchanged
        report.conflicts += len(settled.refused)
        report.published += sum(map(len, pending.values()))


async def reassign_all(
    settings: Settings,
    *,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    attempts: int | None = 10,
) -> ReassignReport:
    """``segstream reassign``: every user of ``settings``' app, with the current model.

    Uses the worker's Redis key prefix, topics and producer settings, and the shared drifted
    centroids when ``SEGSTREAM_DRIFT=river``.

    Raises:
        ArtifactError: no loadable model at ``MODELS/current``.
        ServiceError: the broker cannot be reached.
        StateUnavailable: Redis failed ``attempts`` times in a row.
    """
    assigner = Assigner(settings.model_dir)
    await ensure_topics(settings)
    prefix = state_prefix(settings)
    client = redis_client(settings)
    producer = output_producer(settings)
    try:
        try:
            await producer.start()
        except KAFKA_TRANSIENT as exc:
            where = settings.kafka_bootstrap_servers
            raise ServiceError(f"cannot reach the broker at {where}: {exc!r}") from exc
        reassigner = Reassigner(
            RedisState(
                client,
                prefix,
                order_window=settings.order_dedupe_window,
                cluster=settings.redis_cluster,
            ),
            assigner,
            AiokafkaSender(producer),
            Topics.from_settings(settings),
            drift=shared_drift(settings, client, prefix),
            batch_size=batch_size,
            attempts=attempts,
        )
        return await reassigner.run(progress, on_start)
    finally:
        await producer.stop()
        await client.aclose()
