"""Segment-change decisions and the output records, as pure functions.

A change is due when a user's newly assigned segment differs from the last one queued for
publication, the user's first assignment included (nothing queued yet). A new model version
that leaves the user in the same segment is no change: segment ids are stable across versions
(training matches the new centres to the previous version's), so the segment still means the
same customers and downstream has nothing to learn. Only the stored model version follows the
model that assigned the user. Every change names the model version that produced it.

One rule for every writer: :func:`plan_settle` turns a user's new assignment into its
``settle`` row, for the worker's batches and for ``segstream reassign`` alike.

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
from typing import Any

import msgspec

from segstream.stream.domain.events import Source, user_key
from segstream.stream.domain.topics import Output
from segstream.stream.domain.user import Settle, UserState

__all__ = ["change_due", "encode_change", "event_id", "plan_settle", "user_segment_output"]


def event_id(user_id: int, sequence: int, model_version: str, source: Source) -> str:
    """Id of the user's ``sequence``-th change: 32 hex digits (128 bits of SHA-256).

    The sequence number makes it unique per user (two changes can share a source event: a
    redelivered event re-assigns its user with the state later events left); the model
    version and source make it unique across deployments that share a topic.
    """
    parts = (user_id, sequence, model_version, source.topic, source.partition, source.offset)
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]


def change_due(last_segment: int | None, segment: int) -> bool:
    """True when ``segment`` differs from the last one queued (or none was): an event is due.

    The model version plays no part (see the module docstring).
    """
    return last_segment != segment


def plan_settle(
    state: UserState,
    segment: int,
    model_version: str,
    *,
    source: Source,
    occurred_at: str,
) -> Settle | None:
    """The ``settle`` row of a user just assigned ``segment`` under ``model_version`` (pure).

    - segment changed (:func:`change_due`): the user's next change event (sequence
      ``state.changes + 1``), caused by ``source`` at ``occurred_at`` (RFC 3339);
    - same segment, other model version: the model version only, no event;
    - same segment and version: a row only to read the user's pending changes, if any;
      ``None`` when there are none (nothing to do).

    ``state`` is what ``apply`` returned for the user, the features ``segment`` was computed
    from included: the row's write happens only if all of it is still stored.
    """
    if change_due(state.segment, segment):
        change: bytes | None = encode_change(
            user_id=state.user_id,
            sequence=state.changes + 1,
            previous_segment=state.segment,
            segment=segment,
            model_version=model_version,
            occurred_at=occurred_at,
            features=state.features(),
            source=source,
        )
    elif state.model_version != model_version or state.pending:
        change = None
    else:
        return None
    return Settle(
        user_id=state.user_id,
        seen_segment=state.segment,
        seen_model_version=state.model_version,
        segment=segment,
        model_version=model_version,
        change=change,
        updated_at=occurred_at if change is not None else "",
        seen_changes=state.changes,
        seen_feature_version=state.feature_version,
    )


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
