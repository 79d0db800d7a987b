"""What a destination receives: delivery events and the JSON body of one POST (pure).

A body is ``{"events": [event, ...]}`` (``schemas/delivery_batch.json``), events in the order
they must be applied. ``kind`` is ``segment_change``, ``snapshot`` (backfill) or ``user_left``
(the user was erased: ``segment`` null; their next event, if any, starts again at sequence 1).
Every event carries its ``idempotency_key``: a live change's is its
``event_id`` (the same on every re-send, see :mod:`segstream.stream.domain.changes`), a backfill
snapshot's is ``snapshot-<user_id>-<sequence>``. The ``Idempotency-Key`` header of a POST is a
digest of its events' keys: the same batch re-sent carries the same header, but batches are not
guaranteed to be cut the same way after a restart, so a receiver deduplicates by event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from segstream.stream.domain.changes import change_sequence

__all__ = [
    "DeliveryEvent",
    "EventKind",
    "batch_body",
    "batch_key",
    "change_event",
    "snapshot_event",
]

EventKind = Literal["segment_change", "snapshot", "user_left"]


@dataclass(frozen=True)
class DeliveryEvent:
    """One event for a destination; ``raw`` is the Kafka value it came from (dead letters keep
    it byte for byte), empty for a snapshot."""

    kind: EventKind
    idempotency_key: str
    user_id: int
    sequence: int
    segment: int | None
    """None for ``user_left``, and for a ``segment_change`` that unassigns the user (they no
    longer have every feature, so no segment; schemas/segment_change.json)."""
    previous_segment: int | None
    model_version: str | None
    occurred_at: str
    raw: bytes = b""

    def document(self) -> dict[str, Any]:
        """The event as it appears in a body."""
        return {
            "kind": self.kind,
            "idempotency_key": self.idempotency_key,
            "user_id": self.user_id,
            "sequence": self.sequence,
            "segment": self.segment,
            "previous_segment": self.previous_segment,
            "model_version": self.model_version,
            "occurred_at": self.occurred_at,
        }


def change_event(value: bytes) -> DeliveryEvent:
    """The delivery event of a ``segment-changes`` record value.

    Raises:
        ValueError: ``value`` is not a change event (``schemas/segment_change.json``).
    """
    try:
        document = msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    try:
        if document.get("left") is True:
            # The user left (schemas/segment_left.json): their numbering ends here, and a
            # later event of theirs starts it again from 1.
            return DeliveryEvent(
                kind="user_left",
                idempotency_key=str(document["event_id"]),
                user_id=int(document["user_id"]),
                sequence=int(document["sequence"]),
                segment=None,
                previous_segment=document.get("previous_segment"),
                model_version=document.get("model_version"),
                occurred_at=str(document["occurred_at"]),
                raw=value,
            )
        return DeliveryEvent(
            kind="segment_change",
            idempotency_key=str(document["event_id"]),
            user_id=int(document["user_id"]),
            sequence=change_sequence(document),
            segment=_segment(document["segment"]),
            previous_segment=document.get("previous_segment"),
            model_version=str(document["model_version"]),
            occurred_at=str(document["occurred_at"]),
            raw=value,
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a change event: missing or wrong {exc}") from exc


def _segment(value: Any) -> int | None:
    """A change's ``segment``: ``None`` unassigns the user."""
    return None if value is None else int(value)


def snapshot_event(
    user_id: int, sequence: int, segment: int, model_version: str, updated_at: str
) -> DeliveryEvent:
    """A backfill event: the user's current segment, as of their ``sequence``-th change."""
    return DeliveryEvent(
        kind="snapshot",
        idempotency_key=f"snapshot-{user_id}-{sequence}",
        user_id=user_id,
        sequence=sequence,
        segment=segment,
        previous_segment=None,
        model_version=model_version,
        occurred_at=updated_at,
    )


def batch_body(events: Sequence[DeliveryEvent]) -> bytes:
    """The UTF-8 JSON body of one POST."""
    return msgspec.json.encode({"events": [event.document() for event in events]})


def batch_key(events: Sequence[DeliveryEvent]) -> str:
    """The ``Idempotency-Key`` header of a POST of ``events``: 32 hex digits."""
    joined = "\n".join(event.idempotency_key for event in events)
    return hashlib.sha256(joined.encode()).hexdigest()[:32]
