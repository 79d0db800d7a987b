"""Segment-change decisions and the output records, as pure functions.

A change is due when a user's newly assigned (segment, model version) differs from the last
one queued for publication, the user's first assignment included (nothing queued yet). A
segment number only means something under the model that produced it, so a new model version
with the same number is a change too: consumers learn which model each segment belongs to.

The change's ``event_id`` is derived from the user and the change's sequence number (the
user's n-th change; Redis stores n with the segment, atomically), plus the model version and
source event. The bytes written to the outbox are re-sent unchanged after a crash: one change,
one ``event_id``, however many sends; and no two changes of a user share one.

Wire formats (``schemas/segment_change.json``, ``schemas/user_segment.json``): compact JSON
with keys in a fixed order, UTF-8 (not ASCII-escaped); the message key is the user_id as a
decimal string.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from segstream.stream.events import Source, user_key

__all__ = [
    "Output",
    "change_due",
    "encode_change",
    "event_id",
    "user_segment_output",
]


@dataclass(frozen=True, slots=True)
class Output:
    """One record to publish: topic, key, value, headers."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def event_id(user_id: int, sequence: int, model_version: str, source: Source) -> str:
    """Id of the user's ``sequence``-th change: 32 hex digits (128 bits of SHA-256).

    The sequence number makes it unique per user (two changes can share a source event: a
    redelivered event re-assigns its user with the state later events left); the model
    version and source make it unique across deployments that share a topic.
    """
    parts = (user_id, sequence, model_version, source.topic, source.partition, source.offset)
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]


def change_due(
    last_segment: int | None,
    last_model_version: str | None,
    segment: int,
    model_version: str,
) -> bool:
    """True when (segment, model_version) differs from the last one queued (or none was)."""
    return last_segment != segment or last_model_version != model_version


def encode_change(
    *,
    user_id: int,
    sequence: int,
    previous_segment: int | None,
    segment: int,
    model_version: str,
    occurred_at: str,
    features: Mapping[str, Any],
    source: Source,
) -> bytes:
    """The ``segment-changes`` value: UTF-8 JSON per ``schemas/segment_change.json``.

    ``sequence`` numbers the user's changes from 1 (see :func:`event_id`); ``occurred_at`` is
    the RFC 3339 ``created_at`` of the input event that caused the change (business time).
    """
    document = {
        "event_id": event_id(user_id, sequence, model_version, source),
        "user_id": user_id,
        "previous_segment": previous_segment,
        "segment": segment,
        "model_version": model_version,
        "occurred_at": occurred_at,
        "features": dict(features),
        "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset},
    }
    return msgspec.json.encode(document)


def user_segment_output(change: bytes, changes_topic: str, segments_topic: str) -> list[Output]:
    """The two records publishing one queued change: the change, and the compacted current value.

    Raises:
        ValueError: ``change`` is not a change event as :func:`encode_change` makes it.
    """
    document = msgspec.json.decode(change)
    user_id = document["user_id"]
    current = {
        "user_id": user_id,
        "segment": document["segment"],
        "model_version": document["model_version"],
        "updated_at": document["occurred_at"],
    }
    key = user_key(user_id)
    value = msgspec.json.encode(current)
    return [Output(changes_topic, key, change), Output(segments_topic, key, value)]
