"""One batch of input records, end to end: validate, update Redis, assign, publish, settle.

:class:`BatchProcessor` is the worker minus Faust: the agent hands it the raw records of a
batch and acknowledges them once :meth:`BatchProcessor.process` has returned, which happens
only after every output of the batch (changes, current segments, dead letters) has been
acknowledged by the broker. The steps:

1. the source (:mod:`segstream.stream.sources`; :func:`parse_batch` for the JSON topics) sorts
   records into valid events grouped by user, in order, and
   dead letters, each fitted to the dead-letter topic's size limit (an input near the broker's
   limit plus our headers would otherwise be a record no producer can send, stopping the
   worker); the dead letters are sent with the changes (step 5).
2. one Redis round trip applies every user's events (fenced, idempotent) and returns each
   touched user's state;
3. one :func:`~segstream.training.assign.assign` call assigns every assignable user;
4. :func:`plan_settles` (pure) decides the changes; one Redis round trip queues them in the
   users' outboxes and reads every pending change back (older ones a crash left included);
5. the pending changes are published (each to ``segment-changes``, a user's newest to
   ``user-segments``) and acknowledged, then removed from the outboxes (a crash in between
   only makes a change be published again, same bytes and event_id); the dead letters are
   sent beside them.

Steps 1-4 are the batch's first stage (:meth:`BatchProcessor.prepare`), step 5 and the dead
letters its second (:meth:`BatchProcessor.complete`); :meth:`BatchProcessor.process` runs both.
The worker's pipeline (:mod:`~segstream.stream.worker.batching`, ``SEGSTREAM_PIPELINE_DEPTH``)
runs the next batch's first stage while this one's second stage waits for the broker; its
docstring gives the rules and why every guarantee holds.

A user leaving (:class:`~segstream.stream.domain.events.UserLeft`) is a ``settle`` row too
(:mod:`segstream.stream.domain.leaving`): steps 2-5 run once per round of the batch, a second
round only for users with events after their leave in the same batch.

Every step is safe to repeat, which is what makes a crash anywhere harmless: the records are
redelivered, fenced events change nothing, and their users are re-assigned, so a change
queued before the crash is found in the outbox and published (with its original event_id).
Redis and broker failures are retried with backoff; a bug propagates and stops the worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from segstream.errors import ReplicaWaitTimeout, StateConflict
from segstream.stream.clients.retry import redis_call
from segstream.stream.domain.batch import ParsedBatch, RawRecord, plan_settles
from segstream.stream.domain.changes import outbox_outputs
from segstream.stream.domain.dead_letters import (
    OFFSET,
    ORIGINAL_SIZE,
    PARTITION,
    TOPIC,
    read_headers,
)
from segstream.stream.domain.events import Event, Source, UnknownFieldLog, UnknownFields, UserLeft
from segstream.stream.domain.leaving import Leave, Round, plan_leave, split_rounds
from segstream.stream.domain.observer import WorkerObserver
from segstream.stream.domain.partitioning import PatternLog, misplacement
from segstream.stream.domain.topics import Output, Topics
from segstream.stream.domain.user import Settle, SettleOutcome, UserState
from segstream.stream.drift.shared import SharedDrift
from segstream.stream.kafka.publisher import Sender
from segstream.stream.sources.base import InputSource
from segstream.stream.sources.json_topics import JsonTopics
from segstream.stream.state.replicas import ReplicaShortfall
from segstream.stream.worker.assigner import Assigner
from segstream.stream.worker.phases import PhaseClock

__all__ = ["LEAVE_ATTEMPTS", "BatchProcessor", "BatchState", "Prepared", "Stats"]

LEAVE_ATTEMPTS = 5
"""Writes of one batch's erasures before the batch fails (each refused one is re-read)."""

log = logging.getLogger(__name__)


class BatchState(Protocol):
    """The per-user state a :class:`BatchProcessor` reads and writes: the three steps of a batch.

    :class:`~segstream.stream.state.store.RedisState` is the one the worker uses; its docstrings
    state the guarantees (each call atomic per user and safe to repeat, ``settle_outcome`` a
    compare-and-set against what ``apply`` returned). Failures surface as Redis' exceptions
    (:data:`~segstream.stream.clients.retry.REDIS_TRANSIENT`), which the processor retries.
    """

    shortfall: ReplicaShortfall
    """Primaries short of replicas (the HTTP side reports them as degraded)."""

    async def apply(self, by_user: Mapping[int, Sequence[tuple[Source, Event]]]) -> list[UserState]:
        """Apply each user's events in order (fenced); every touched user's state, in order."""
        ...

    async def settle_outcome(self, settles: Sequence[Settle | Leave]) -> SettleOutcome:
        """Store each row (compare-and-set); the rows' users' pending changes and refusals."""
        ...

    async def clear(self, published: Mapping[int, Sequence[bytes]]) -> None:
        """Remove changes the broker acknowledged from their users' outboxes."""
        ...


@dataclass
class Stats:
    """Running totals of one worker process (not persisted; logged and shown by benchmarks)."""

    records: int = 0
    fresh: int = 0
    """Valid events that changed state (the others were redeliveries)."""
    valid: int = 0
    assigned: int = 0
    changes: int = 0
    """Segment changes published (re-sends included)."""
    batches: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    """Rejected inputs by reason code."""

    def as_dict(self) -> dict[str, Any]:
        """The totals as plain JSON-ready values."""
        return {
            "records": self.records,
            "valid": self.valid,
            "fresh": self.fresh,
            "assigned": self.assigned,
            "changes": self.changes,
            "batches": self.batches,
            "dead_letters": dict(sorted(self.dead_letters.items())),
        }


@dataclass(slots=True)
class Prepared:
    """A batch after its first stage (:meth:`BatchProcessor.prepare`): state stored, changes
    queued in the outboxes, nothing of it sent yet."""

    records: Sequence[RawRecord]
    parsed: ParsedBatch
    extra: list[Output]
    """Dead letters and the source's routed records, sent by the second stage."""
    started: float
    """``time.perf_counter()`` at the batch's start (the batch-duration metric)."""
    states: list[UserState] = field(default_factory=list)
    assigned: int = 0
    published: int = 0
    """Changes sent so far (re-sends and leave events included)."""
    pending: dict[int, list[bytes]] = field(default_factory=dict)
    """The last round's users' pending changes (user -> changes, oldest first)."""
    late: list[Output] = field(default_factory=list)
    """The source's records to send after the changes (``InputSource.after_apply``)."""


class BatchProcessor:
    """Runs batches through Redis, the model and the broker; see the module docstring."""

    def __init__(
        self,
        state: BatchState,
        assigner: Assigner,
        sender: Sender,
        topics: Topics,
        dead_letter_max_bytes: int | None = None,
        *,
        drift: SharedDrift | None = None,
        metrics: WorkerObserver | None = None,
        partitions: Mapping[str, int] | None = None,
        unknown_fields: UnknownFields = "ignore",
        source: InputSource | None = None,
    ) -> None:
        """Process batches with these parts.

        Args:
            dead_letter_max_bytes: the largest record the dead-letter topic accepts (the
                producer's ``max_request_size``); a dead letter over it is truncated to fit
                (:func:`parse_batch`) and logged. ``None``: dead letters are sent whole.
            drift: see :attr:`drift`. metrics: see :attr:`metrics`.
            partitions: see :attr:`partitions`. unknown_fields: see :attr:`unknown_fields`.
            source: see :attr:`source`; the JSON ``users``/``orders`` topics if ``None``.
        """
        self.state = state
        self.assigner = assigner
        self.sender = sender
        self.topics = topics
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.stats = Stats()
        self.drift: SharedDrift | None = drift
        """Drift mode's shared centroids (``SEGSTREAM_DRIFT=river``); ``None``: the trained ones."""
        self.metrics: WorkerObserver | None = metrics
        """Where batches, changes, dead letters and Redis failures are counted, if anywhere."""
        self.partitions: dict[str, int] = dict(partitions or {})
        """Input topic -> its partition count, for the placement check (none: no check)."""
        self.placements = PatternLog()
        """Misplaced producer patterns already logged (each is logged once)."""
        self.unknown_fields: UnknownFields = unknown_fields
        """``SEGSTREAM_UNKNOWN_FIELDS``: ignore (count, log once) or dead-letter unknown fields."""
        self.unknown_log = UnknownFieldLog()
        """Ignored (topic, field) pairs already logged (each is logged once)."""
        self.source: InputSource = JsonTopics(topics) if source is None else source
        """Where the records come from and how they become changes (``SEGSTREAM_SOURCE``)."""
        self.phases = PhaseClock()
        """Wall-clock seconds per phase of the batches (the pipeline's waits are added to it;
        the worker logs it as ``phases {...}`` when it stops)."""
        self._sent_last: dict[int, set[bytes]] = {}
        """The changes the last second stage sent and cleared, per user (see :meth:`complete`)."""

    def _check_placement(self, records: Sequence[RawRecord]) -> None:
        """Count records off their key's murmur2 partition; log each producer pattern once.

        Such records are still processed: a user's events split over two partitions may be
        handled by two workers and applied out of order, which the warning explains.
        """
        for record in records:
            count = self.partitions.get(record.topic)
            if not count:
                # Not counted, or counted before the topic existed (a change topic Connect
                # creates with its first row, after the worker started): nothing to check by.
                continue
            pattern = misplacement(record.topic, record.key, record.partition, count)
            if pattern is None:
                continue
            if self.metrics is not None:
                self.metrics.misplaced(record.topic)
            if self.placements.first_time(pattern):
                log.warning("%s", pattern.describe())

    def _note_unknown(self, unknown: Sequence[tuple[str, tuple[str, ...]]]) -> None:
        """Count records with ignored fields per topic; log each (topic, field) once."""
        if self.metrics is not None:
            for topic, n in Counter(topic for topic, _ in unknown).items():
                self.metrics.unknown_fields(topic, n)
        for topic, names in unknown:
            for line in self.unknown_log.first_times(topic, names):
                log.warning("%s", line)

    async def _redis(self, what: str, operation: Any) -> Any:
        async def attempt() -> Any:
            try:
                return await operation()
            except ReplicaWaitTimeout:
                # The step is retried (its writes again, then WAIT), the batch stays unacked.
                if self.metrics is not None:
                    self.metrics.redis_wait_timeout()
                raise

        return await redis_call(attempt, what=what, on_failure=self._redis_failed)

    async def _apply(
        self, by_user: Mapping[int, Sequence[tuple[Source, Event]]]
    ) -> list[UserState]:
        """``state.apply`` with retries, keeping what the first WAIT-timed-out attempt applied.

        An attempt whose writes were made but not acknowledged by the replicas in time
        (:class:`ReplicaWaitTimeout`) is retried; the retry finds those events already applied
        (fenced) and reports ``applied`` 0 for their users, which would leave them out of
        drift's learning. So each user's ``applied`` is the larger of the first such attempt's
        and the final one's (the final state is the retry's: the same, or re-applied on a
        promoted replica that had lost the first writes).
        """
        first: list[UserState] | None = None

        async def attempt() -> list[UserState]:
            nonlocal first
            try:
                return await self.state.apply(by_user)
            except ReplicaWaitTimeout as exc:
                if first is None and isinstance(exc.result, list):
                    first = exc.result
                raise

        states: list[UserState] = await self._redis("apply events", attempt)
        if first is None:
            return states
        return [
            dataclasses.replace(state, applied=max(state.applied, earlier.applied))
            for state, earlier in zip(states, first, strict=True)
        ]

    def _redis_failed(self, retrying: bool) -> None:
        if self.metrics is not None:
            self.metrics.redis_error()
            if retrying:
                self.metrics.redis_retry()

    async def process(self, records: Sequence[RawRecord]) -> None:
        """Process one batch; returns once all its effects are stored and published."""
        await self.complete(await self.prepare(records))

    async def prepare(
        self, records: Sequence[RawRecord], previous: Awaitable[None] | None = None
    ) -> Prepared:
        """The first stage of a batch: parse, apply, assign and settle (queue the changes).

        Returns the batch with its changes stored and queued in the outboxes, not yet sent;
        :meth:`complete` sends them. ``previous`` is the previous batch's second stage when it
        may still run (the pipeline's overlap): a batch of several rounds (a user back after
        leaving) publishes its first rounds here, so it waits for ``previous`` before its
        first round: its sends stay in batch order and its settles read no change that
        ``previous`` has yet to send and clear. :mod:`~segstream.stream.worker.batching` says
        why the rest is safe.
        """
        clock = self.phases
        started = time.perf_counter()
        if self.partitions:
            self._check_placement(records)
        source = self.source
        parsed = source.parse(records, self.unknown_fields, max_bytes=self.dead_letter_max_bytes)
        for letter in parsed.truncated:
            self._log_truncated(letter)
        if parsed.unknown:
            self._note_unknown(parsed.unknown)
        now = clock.add("decode + validate", started)
        # The source's own records (change data capture: routed changes) go with the dead
        # letters, acknowledged before the batch is.
        routed = await self._redis("prepare the changes", lambda: source.prepare(parsed))
        now = clock.add("redis prepare", now)
        prepared = Prepared(records, parsed, [*parsed.dead_letters, *routed], started)
        # One round unless a user comes back after leaving in this batch (leaving.py).
        rounds = split_rounds(parsed.by_user)
        if len(rounds) > 1 and previous is not None:
            # A round's changes are sent (and cleared) before the next round settles, which
            # reads the outboxes back: the previous batch's must be sent and cleared first.
            await asyncio.shield(previous)
            now = clock.add("wait previous batch", now)
        for number, round_ in enumerate(rounds, start=1):
            states, assigned, pending = await self._process_round(round_)
            prepared.states += states
            prepared.assigned += assigned
            if number < len(rounds):
                prepared.published += await self._publish(pending)
            else:
                prepared.pending = pending
        now = time.perf_counter()
        prepared.late = await self._redis("finish the changes", lambda: source.after_apply(parsed))
        clock.add("redis prepare", now)
        return prepared

    async def complete(self, prepared: Prepared) -> None:
        """The second stage of a batch: send its outputs, wait for the broker's
        acknowledgements, clear the sent changes from the outboxes.

        Second stages run one at a time, in batch order (the pipeline's rule). A change the
        previous batch's second stage sent is left out here: it was read back by this batch's
        settle before that stage cleared it (same bytes, same event_id), and sending it again
        would be a duplicate that no crash caused.
        """
        dead = asyncio.ensure_future(self.sender.publish(prepared.extra))
        try:
            sent_before = self._sent_last
            pending = {
                uid: kept
                for uid, changes in prepared.pending.items()
                if (kept := [c for c in changes if c not in sent_before.get(uid, ())])
            }
            # Everything read back is cleared: the changes left out were sent (and cleared)
            # already, so removing them again is a no-op that can leave nothing behind.
            prepared.published += await self._publish(pending, clear=prepared.pending)
            self._sent_last = {uid: set(changes) for uid, changes in pending.items()}
            if prepared.late:
                await self.sender.publish(prepared.late)
            now = time.perf_counter()
            await dead
            self.phases.add("publish + acks", now)
        finally:
            if not dead.done():
                dead.cancel()
        records, parsed = prepared.records, prepared.parsed
        self._count(records, parsed, prepared.states, prepared.assigned, prepared.published)
        if self.metrics is not None:
            self._record(self.metrics, records, parsed, prepared.published, prepared.started)

    async def _publish(
        self,
        pending: Mapping[int, Sequence[bytes]],
        clear: Mapping[int, Sequence[bytes]] | None = None,
    ) -> int:
        """Send ``pending`` (user -> changes, oldest first), wait for the acknowledgements,
        then remove ``clear`` (default: ``pending``; what was sent, and possibly changes
        sent before) from the outboxes; returns how many changes were sent."""
        cleared = pending if clear is None else clear
        clock = self.phases
        now = time.perf_counter()
        outputs = outbox_outputs(pending, self.topics.segment_changes, self.topics.user_segments)
        await self.sender.publish(outputs)
        now = clock.add("publish + acks", now)
        await self._redis("clear outbox", lambda: self.state.clear(cleared))
        clock.add("redis clear", now)
        return sum(map(len, pending.values()))

    async def _process_round(
        self, round_: Round
    ) -> tuple[list[UserState], int, dict[int, list[bytes]]]:
        """Apply, assign and settle (leaves included) one round of a batch.

        Returns the round's states, how many users were assigned and the changes pending in
        the round's users' outboxes (user -> changes, oldest first; re-sends and leave events
        included), which the caller publishes.
        """
        clock = self.phases
        by_user = round_.events
        now = time.perf_counter()
        states = await self._apply(by_user)
        now = clock.add("redis apply", now)
        self.assigner.refresh()
        model_version = self.assigner.version
        staying = [s for s in states if s.user_id not in round_.leaves]
        assignable = [s for s in staying if s.assignable]
        drift_epoch: int | None = None
        if self.drift is None:
            segments = self.assigner.assign(assignable)
        else:
            segments, drift_epoch = await self.drift.assign(self.assigner.model, assignable)
        rows: list[Settle | Leave] = []
        rows += plan_settles(staying, segments, model_version, by_user, drift_epoch)
        leaving = [s for s in states if s.user_id in round_.leaves]
        rows += [plan_leave(s, *round_.leaves[s.user_id]) for s in leaving]
        now = clock.add("assign", now)
        outcome = await self._redis("queue changes", lambda: self.state.settle_outcome(rows))
        pending = dict(outcome.pending)
        refused = [s.user_id for s in leaving if s.user_id in outcome.refused]
        if refused:
            pending.update(await self._erase_again(refused, round_.leaves))
        clock.add("redis settle", now)
        return states, len(assignable), pending

    async def _erase_again(
        self, user_ids: list[int], leaves: dict[int, tuple[Source, UserLeft]]
    ) -> dict[int, list[bytes]]:
        """Erase users whose leave row was refused: re-read, re-plan, write, until stored.

        A leave is refused only when another writer (``segstream reassign``) changed the user
        between our read and our write. Returns the erased users' pending changes, their
        leave events included.

        Raises:
            StateConflict: still refused after :data:`LEAVE_ATTEMPTS` more attempts (the batch
                fails and is retried).
        """
        pending: dict[int, list[bytes]] = {}
        for _ in range(LEAVE_ATTEMPTS):
            again: dict[int, list[tuple[Source, Event]]] = {uid: [] for uid in user_ids}
            fresh = await self._redis("read users", partial(self.state.apply, again))
            rows: list[Settle | Leave] = [plan_leave(s, *leaves[s.user_id]) for s in fresh]
            outcome = await self._redis("erase users", partial(self.state.settle_outcome, rows))
            pending.update(outcome.pending)
            user_ids = [uid for uid in user_ids if uid in outcome.refused]
            if not user_ids:
                return pending
        raise StateConflict(
            f"user(s) {sorted(user_ids)[:10]} could not be erased: "
            f"another writer changed them {LEAVE_ATTEMPTS} times in a row (segstream reassign "
            "running over them?); the batch will be retried"
        )

    def _log_truncated(self, letter: Output) -> None:
        headers = read_headers(letter.headers)
        log.warning(
            "dead letter of %s[%s]@%s truncated to %d of %s value bytes: over the %s bytes %s "
            "accepts (its max.message.bytes)",
            headers[TOPIC],
            headers[PARTITION],
            headers[OFFSET],
            len(letter.value or b""),
            headers[ORIGINAL_SIZE],
            self.dead_letter_max_bytes,
            letter.topic,
        )

    @staticmethod
    def _record(
        metrics: WorkerObserver,
        records: Sequence[RawRecord],
        parsed: ParsedBatch,
        changes: int,
        started: float,
    ) -> None:
        for topic, n in Counter(record.topic for record in records).items():
            metrics.consumed(topic, n)
        for reason, n in Counter(parsed.reasons).items():
            metrics.dead_letter(reason, n)
        metrics.changes(changes)
        metrics.observe_batch(time.perf_counter() - started, len(records))

    def _count(
        self,
        records: Sequence[RawRecord],
        parsed: ParsedBatch,
        states: Sequence[UserState],
        assigned: int,
        changes: int,
    ) -> None:
        stats = self.stats
        stats.batches += 1
        stats.records += len(records)
        stats.valid += sum(len(events) for events in parsed.by_user.values())
        stats.fresh += sum(s.applied for s in states)
        stats.assigned += assigned
        stats.changes += changes
        stats.dead_letters.update(parsed.reasons)
