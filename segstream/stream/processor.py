"""One batch of input records, end to end: validate, update Redis, assign, publish, settle.

:class:`BatchProcessor` is the worker minus Faust: the agent hands it the raw records of a
batch and acknowledges them once :meth:`BatchProcessor.process` has returned, which happens
only after every output of the batch (changes, current segments, dead letters) has been
acknowledged by the broker. The steps:

1. :func:`parse_batch` (pure) sorts records into valid events grouped by user, in order, and
   dead letters; the dead letters are sent at once, in the background of the next steps.
2. one Redis round trip applies every user's events (fenced, idempotent) and returns each
   touched user's state;
3. one :func:`~segstream.training.assign.assign` call assigns every assignable user;
4. :func:`plan_settles` (pure) decides the changes; one Redis round trip queues them in the
   users' outboxes and reads every pending change back (older ones a crash left included);
5. the pending changes are published and acknowledged, then removed from the outboxes (a
   crash in between only makes a change be published again, same bytes and event_id).

Every step is safe to repeat, which is what makes a crash anywhere harmless: the records are
redelivered, fenced events change nothing, and their users are re-assigned, so a change
queued before the crash is found in the outbox and published (with its original event_id).
Redis and broker failures are retried with backoff; a bug propagates and stops the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from segstream.errors import EventError, StateError
from segstream.settings import Settings
from segstream.stream.assigner import Assigner
from segstream.stream.changes import Output, plan_settle, user_segment_output
from segstream.stream.dead_letters import dead_letter
from segstream.stream.drift_shared import SharedDrift
from segstream.stream.events import Event, Source, parse_order, parse_user
from segstream.stream.metrics import Metrics
from segstream.stream.publisher import Sender
from segstream.stream.retry import REDIS_TRANSIENT, retry
from segstream.stream.state import RedisState, Settle, UserState

__all__ = [
    "BatchProcessor",
    "ParsedBatch",
    "RawRecord",
    "Stats",
    "Topics",
    "parse_batch",
    "plan_settles",
]

log = logging.getLogger(__name__)


class RawRecord(Protocol):
    """An input record as the consumer delivered it (Faust's Message and aiokafka's match)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names the worker reads and writes."""

    users: str
    orders: str
    segment_changes: str
    user_segments: str
    dead_letters: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        """The topics named by ``settings``."""
        return cls(
            users=settings.topic_users,
            orders=settings.topic_orders,
            segment_changes=settings.topic_segment_changes,
            user_segments=settings.topic_user_segments,
            dead_letters=settings.topic_dead_letters,
        )


@dataclass(frozen=True, slots=True)
class ParsedBatch:
    """A batch sorted out: each user's valid events in arrival order, and the rejects."""

    by_user: dict[int, list[tuple[Source, Event]]]
    dead_letters: list[Output]
    reasons: list[str]
    """The reason code of each dead letter, in the same order."""


def _headers(record: RawRecord) -> list[tuple[str, bytes]]:
    headers = record.headers
    if not headers:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


def parse_batch(records: Sequence[RawRecord], topics: Topics) -> ParsedBatch:
    """Validate ``records``; group valid events by user (arrival order kept per user)."""
    by_user: dict[int, list[tuple[Source, Event]]] = {}
    rejected: list[Output] = []
    reasons: list[str] = []
    users_topic = topics.users
    for record in records:
        try:
            if record.topic == users_topic:
                event: Event = parse_user(record.value, record.key)
            else:
                event = parse_order(record.value, record.key)
        except EventError as exc:
            reasons.append(exc.reason)
            rejected.append(
                dead_letter(
                    topics.dead_letters,
                    exc,
                    source_topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                    value=record.value,
                    headers=_headers(record),
                )
            )
            continue
        source = Source(record.topic, record.partition, record.offset)
        events = by_user.get(event.user_id)
        if events is None:
            by_user[event.user_id] = [(source, event)]
        else:
            events.append((source, event))
    return ParsedBatch(by_user, rejected, reasons)


def plan_settles(
    states: Sequence[UserState],
    segments: np.ndarray,
    model_version: str,
    by_user: dict[int, list[tuple[Source, Event]]],
) -> list[Settle]:
    """The ``settle`` rows a batch needs (pure), one per user that needs one.

    ``segments[i]`` is the new segment of the i-th *assignable* state. Each user's row is
    :func:`~segstream.stream.changes.plan_settle`'s, a change being caused by the user's last
    event of the batch (its source and ``created_at``).
    """
    settles: list[Settle] = []
    assignable = (state for state in states if state.assignable)
    for state, segment in zip(assignable, segments.tolist(), strict=True):
        source, event = by_user[state.user_id][-1]
        settle = plan_settle(
            state, segment, model_version, source=source, occurred_at=event.created_at
        )
        if settle is not None:
            settles.append(settle)
    # A user with a segment stays assignable (profiles are replaced whole, counts only grow),
    # so every user with pending changes was visited above.
    return settles


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


class BatchProcessor:
    """Runs batches through Redis, the model and the broker; see the module docstring."""

    def __init__(
        self, state: RedisState, assigner: Assigner, sender: Sender, topics: Topics
    ) -> None:
        self.state = state
        self.assigner = assigner
        self.sender = sender
        self.topics = topics
        self.stats = Stats()
        self.drift: SharedDrift | None = None
        """Drift mode's shared centroids (``SEGSTREAM_DRIFT=river``); ``None``: the trained ones."""
        self.metrics: Metrics | None = None
        """Where batches, changes, dead letters and Redis failures are counted, if anywhere."""

    async def _redis(self, what: str, operation: Any) -> Any:
        return await retry(
            operation,
            what=what,
            transient=REDIS_TRANSIENT,
            error=StateError,
            on_failure=self._redis_failed,
        )

    def _redis_failed(self, retrying: bool) -> None:
        if self.metrics is not None:
            self.metrics.redis_error()
            if retrying:
                self.metrics.redis_retry()

    async def process(self, records: Sequence[RawRecord]) -> None:
        """Process one batch; returns once all its effects are stored and published."""
        started = time.perf_counter()
        topics = self.topics
        parsed = parse_batch(records, topics)
        dead = asyncio.ensure_future(self.sender.publish(parsed.dead_letters))
        try:
            states = await self._redis("apply events", lambda: self.state.apply(parsed.by_user))
            self.assigner.refresh()
            model_version = self.assigner.version
            assignable = [s for s in states if s.assignable]
            segments = (
                self.assigner.assign(assignable)
                if self.drift is None
                else await self.drift.assign(self.assigner.model, assignable)
            )
            settles = plan_settles(states, segments, model_version, parsed.by_user)
            pending = await self._redis("queue changes", lambda: self.state.settle(settles))
            outputs = [
                output
                for changes in pending.values()
                for change in changes
                for output in user_segment_output(
                    change, topics.segment_changes, topics.user_segments
                )
            ]
            await self.sender.publish(outputs)
            await self._redis("clear outbox", lambda: self.state.clear(pending))
            await dead
        finally:
            if not dead.done():
                dead.cancel()
        self._count(records, parsed, states, len(assignable), len(outputs) // 2)
        if self.metrics is not None:
            self._record(self.metrics, records, parsed, len(outputs) // 2, started)

    @staticmethod
    def _record(
        metrics: Metrics,
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
