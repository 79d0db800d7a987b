"""Delivery dead letters: events a destination never acknowledged, kept for ``--redrive``.

One record per event on ``SEGSTREAM_TOPIC_DELIVERY_DEAD_LETTERS``, keyed by the user id (so one
user's letters stay in order), its value the JSON document
``{"destination", "last_status", "error", "attempts", "failed_at", "event", "change"}``:
``event`` as the destination would have received it, ``change`` the original ``segment-changes``
value as text (empty for a backfill snapshot, or a record that was not a change at all).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from segstream.stream.delivery.payload import DeliveryEvent
from segstream.stream.domain.events import user_key

__all__ = ["DeadLetter", "decode_dead_letter", "destination_of", "encode_dead_letter", "event_of"]


class DeadLetter(msgspec.Struct, frozen=True):
    """A decoded delivery dead letter."""

    destination: str
    last_status: int | None
    error: str
    attempts: int
    failed_at: str
    event: dict[str, Any] | None
    change: str


def encode_dead_letter(
    destination: str,
    event: DeliveryEvent | None,
    raw: bytes,
    *,
    last_status: int | None,
    error: str,
    attempts: int,
    now: datetime | None = None,
) -> tuple[bytes | None, bytes]:
    """``(key, value)`` of the dead letter of ``event`` (None: ``raw`` was no change event)."""
    letter = DeadLetter(
        destination=destination,
        last_status=last_status,
        error=error,
        attempts=attempts,
        failed_at=(now or datetime.now(UTC)).isoformat(timespec="milliseconds"),
        event=None if event is None else event.document(),
        change=raw.decode("utf-8", errors="replace"),
    )
    key = None if event is None else user_key(event.user_id)
    return key, msgspec.json.encode(letter)


def decode_dead_letter(value: bytes) -> DeadLetter:
    """The dead letter in ``value``.

    Raises:
        ValueError: ``value`` is not a delivery dead letter.
    """
    try:
        return msgspec.json.decode(value, type=DeadLetter)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a delivery dead letter: {exc}") from exc


class _Addressed(msgspec.Struct):
    """Only the destination of a letter: the other fields are skipped, not decoded."""

    destination: str


def destination_of(value: bytes | None) -> str | None:
    """The destination a dead letter's ``value`` names; ``None`` when it is no letter."""
    try:
        return msgspec.json.decode(value or b"", type=_Addressed).destination
    except msgspec.DecodeError:
        return None


def event_of(letter: DeadLetter) -> DeliveryEvent | None:
    """The event to send again (None: the letter holds no event, only unreadable bytes)."""
    if letter.event is None:
        return None
    document = letter.event
    return DeliveryEvent(
        kind=document["kind"],
        idempotency_key=document["idempotency_key"],
        user_id=document["user_id"],
        sequence=document["sequence"],
        segment=document["segment"],
        previous_segment=document["previous_segment"],
        model_version=document["model_version"],
        occurred_at=document["occurred_at"],
        raw=letter.change.encode(),
    )
