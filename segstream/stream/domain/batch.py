"""One batch of input records sorted out, and the settle rows it needs (pure functions).

:func:`parse_batch` validates each record into an event or a dead letter (fitted to the
dead-letter topic's size limit) and groups the valid events by user in arrival order;
:func:`plan_settles` turns a batch's assignments into the ``settle`` rows of the users whose
segment or model version changed. The worker's
:class:`~segstream.stream.worker.processor.BatchProcessor` does the I/O around them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from segstream.errors import EventError
from segstream.stream.domain.changes import plan_settle
from segstream.stream.domain.dead_letters import reject_record
from segstream.stream.domain.events import (
    Event,
    OrderEvent,
    Source,
    UnknownFields,
    UserEvent,
    parse_event,
    parse_leave,
)
from segstream.stream.domain.topics import Output, Topics
from segstream.stream.domain.user import Settle, UserState

__all__ = ["ParsedBatch", "RawRecord", "parse_batch", "plan_settles", "record_time"]


class RawRecord(Protocol):
    """An input record as the consumer delivered it (Faust's Message and aiokafka's match)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


@dataclass(frozen=True, slots=True)
class ParsedBatch:
    """A batch sorted out: each user's valid events in arrival order, and the rejects."""

    by_user: dict[int, list[tuple[Source, Event]]]
    dead_letters: list[Output]
    """Each rejected record's dead letter, in arrival order, each within the size limit."""
    reasons: list[str]
    """The reason code of each dead letter, in the same order."""
    unknown: list[tuple[str, tuple[str, ...]]]
    """Per valid record that carried fields no event has (ignored): its topic and their names."""
    truncated: list[Output]
    """The dead letters among them that had to be cut to fit (see :func:`parse_batch`)."""


def record_time(record: RawRecord) -> datetime:
    """The Kafka timestamp of ``record`` as an aware UTC datetime.

    Faust's ``Message.timestamp`` is in seconds (a float), aiokafka's ``ConsumerRecord``'s in
    milliseconds (an int); a record without one (built by hand) is taken as read now.
    """
    stamp = getattr(record, "timestamp", None)
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        return datetime.now(UTC)
    seconds = stamp / 1000 if isinstance(stamp, int) else stamp
    return datetime.fromtimestamp(seconds, UTC)


def parse_batch(
    records: Sequence[RawRecord],
    topics: Topics,
    unknown_fields: UnknownFields = "ignore",
    *,
    max_bytes: int | None = None,
) -> ParsedBatch:
    """Validate ``records``; group valid events by user (arrival order kept per user).

    A tombstone (null value) on the users topic is the user leaving: a
    :class:`~segstream.stream.domain.events.UserLeft` at the record's Kafka timestamp
    (:func:`record_time`), dead-lettered (``key_mismatch``) when its key names no user.

    Args:
        unknown_fields: ``SEGSTREAM_UNKNOWN_FIELDS``: records with fields no event has are
            valid and listed in :attr:`ParsedBatch.unknown` (``ignore``), or dead letters.
        max_bytes: the largest record the dead-letter topic accepts (its ``max.message.bytes``,
            the producer's ``max_request_size``), if any. A dead letter over it (an input near
            the input topic's own limit, plus our headers) is replaced by
            :func:`~segstream.stream.domain.dead_letters.fit_dead_letter`'s copy: the longest
            prefix of the value that fits, with headers saying what was cut and the original
            size. Such a letter is in ``truncated`` too.
    """
    by_user: dict[int, list[tuple[Source, Event]]] = {}
    rejected: list[Output] = []
    reasons: list[str] = []
    unknown: list[tuple[str, tuple[str, ...]]] = []
    truncated: list[Output] = []
    users_topic = topics.users
    for record in records:
        kind = UserEvent if record.topic == users_topic else OrderEvent
        event: Event
        extra: tuple[str, ...]
        try:
            if record.value is None and kind is UserEvent:
                # A tombstone on users: the user left (segstream forget, the API's forget).
                event, extra = parse_leave(record.key, record_time(record)), ()
            else:
                event, extra = parse_event(record.value, record.key, kind, unknown_fields)
        except EventError as exc:
            letter, cut = reject_record(topics.dead_letters, record, exc, max_bytes)
            if cut:
                truncated.append(letter)
            reasons.append(exc.reason)
            rejected.append(letter)
            continue
        if extra:
            unknown.append((record.topic, extra))
        source = Source(record.topic, record.partition, record.offset)
        events = by_user.get(event.user_id)
        if events is None:
            by_user[event.user_id] = [(source, event)]
        else:
            events.append((source, event))
    return ParsedBatch(by_user, rejected, reasons, unknown, truncated)


def plan_settles(
    states: Sequence[UserState],
    segments: np.ndarray,
    model_version: str,
    by_user: dict[int, list[tuple[Source, Event]]],
    drift_epoch: int | None = None,
) -> list[Settle]:
    """The ``settle`` rows a batch needs (pure), one per user that needs one.

    ``segments[i]`` is the new segment of the i-th *assignable* state, assigned with drift
    epoch ``drift_epoch`` (``None``: drift off). A state that is not assignable but has a
    segment stored is unassigned (a change with segment ``None``); one with pending changes
    only reads them. Each user's row is
    :func:`~segstream.stream.domain.changes.plan_settle`'s, a change being caused by the user's last
    event of the batch (its source and ``created_at``).
    """
    values = segments.tolist()
    if len(values) != sum(state.assignable for state in states):
        raise ValueError(f"{len(values)} segments for {len(states)} states: one per assignable")
    settles: list[Settle] = []
    segments_of = iter(values)
    for state in states:
        # Change data capture can take a feature away (a user's last order moved, their last
        # branded line deleted) while the user stays: the batch then drops them, so the stream
        # unassigns them (segment None), or only reads their pending changes.
        segment = next(segments_of) if state.assignable else None
        if segment is None and state.segment is None and not state.pending:
            continue  # never assigned, nothing queued: nothing to do
        source, event = by_user[state.user_id][-1]
        settle = plan_settle(
            state,
            segment,
            model_version,
            source=source,
            occurred_at=event.created_at,
            drift_epoch=drift_epoch,
        )
        if settle is not None:
            settles.append(settle)
    return settles
