"""Segment-change decisions and the output records, as pure functions.

A change is due when a user's newly assigned segment differs from the last one queued for
publication, the user's first assignment included (nothing queued yet). A new model version
that leaves the user in the same segment is no change: segment ids are stable across versions
(training matches the new centres to the previous version's), so the segment still means the
same customers and downstream has nothing to learn. Only the stored model version follows the
model that assigned the user. Every change names the model version that produced it.

In drift mode (``SEGSTREAM_DRIFT=river``) every change also names the drift epoch whose centres
produced it (``drift_epoch``), and so does its ``user-segments`` value; every assignment stores
its epoch with the user, an assignment that keeps the segment included (no event then). So a
user's stored segment is :func:`segstream.training.assign.assign` of their features with the
centres of their stored epoch, which ``segstream assign --with-drift --epoch E`` reproduces;
and each change's ``segment`` is the assignment of its own ``features`` with its epoch.
Without drift there is no ``drift_epoch`` field at all: the bytes are those of before.

One rule for every writer: :func:`plan_settle` turns a user's new assignment into its
``settle`` row, for the worker's batches and for ``segstream reassign`` alike.

The change's ``event_id`` is derived from the user and the change's sequence number (the
user's n-th change; Redis stores n with the segment, atomically), plus the model version and
source event. The bytes written to the outbox are re-sent unchanged after a crash: one change,
one ``event_id``, however many sends; and no two changes of a user share one.

Publishing a user's pending changes (:func:`outbox_outputs`): every one goes to
``segment-changes``, oldest first, and only the newest to ``user-segments``. Both values carry
the change's ``sequence``: two writers publishing one user's outbox (a worker and
``segstream reassign``, two workers during a rebalance) can land an older value after a newer
one, so a consumer keeps, per user, the value with the highest sequence and drops the others.

Wire formats (``schemas/segment_change.json``, ``schemas/user_segment.json``): compact JSON
with keys in a fixed order, UTF-8 (not ASCII-escaped); the message key is the user_id as a
decimal string.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec

from segstream.stream.domain.events import Source, user_key
from segstream.stream.domain.topics import Output
from segstream.stream.domain.user import Settle, UserState

__all__ = [
    "change_due",
    "change_sequence",
    "current_segment",
    "encode_change",
    "encode_leave",
    "ends_segment",
    "event_id",
    "is_leave",
    "outbox_outputs",
    "plan_settle",
]

LEGACY_SEQUENCE_LIMIT: Final = 100_000
"""Highest sequence :func:`change_sequence` looks for in a change queued before changes carried
one (their ``event_id`` is derived from it; a user has that many changes in no real history)."""


def event_id(user_id: int, sequence: int, model_version: str, source: Source) -> str:
    """Id of the user's ``sequence``-th change: 32 hex digits (128 bits of SHA-256).

    The sequence number makes it unique per user (two changes can share a source event: a
    redelivered event re-assigns its user with the state later events left); the model
    version and source make it unique across deployments that share a topic.
    """
    parts = (user_id, sequence, model_version, source.topic, source.partition, source.offset)
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]


def change_due(last_segment: int | None, segment: int | None) -> bool:
    """True when ``segment`` differs from the last one queued (or none was): an event is due.

    ``None`` is no segment: a user who had one and is no longer assignable is due an
    unassigning change, one who had none and still has none is not. The model version plays
    no part (see the module docstring).
    """
    return last_segment != segment


def plan_settle(
    state: UserState,
    segment: int | None,
    model_version: str,
    *,
    source: Source,
    occurred_at: str,
    drift_epoch: int | None = None,
) -> Settle | None:
    """The ``settle`` row of a user just assigned ``segment`` under ``model_version`` (pure).

    ``drift_epoch`` is the drift epoch the segment was assigned with (``None``: drift off).
    ``segment`` ``None`` says the user is not assignable (a feature is missing): change data
    capture can take a feature away (their last order moved, their last branded line deleted).

    - segment changed (:func:`change_due`): the user's next change event (sequence
      ``state.changes + 1``), caused by ``source`` at ``occurred_at`` (RFC 3339); with
      ``segment`` ``None`` it unassigns the user (``segment`` null in the event, named by
      ``model_version``; the row stores no model version and no drift epoch);
    - not assignable and no segment stored: a row only to read the user's pending changes (an
      unassigning change not yet published), if any; ``None`` otherwise;
    - same segment, other model version, or drift on: the model version and drift epoch only,
      no event;
    - same segment and version: a row only to read the user's pending changes, if any;
      ``None`` when there are none (nothing to do).

    ``state`` is what ``apply`` returned for the user, the features ``segment`` was computed
    from included: the row's write happens only if all of it is still stored.
    """
    if segment is None:
        drift_epoch = None  # no segment, so nothing was assigned with an epoch
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
            drift_epoch=drift_epoch,
        )
        stored_version = None if segment is None else model_version
    elif segment is not None and (state.model_version != model_version or drift_epoch is not None):
        change, stored_version = None, model_version
    elif state.pending:
        change, stored_version = None, state.model_version  # a read: nothing stored
    else:
        return None
    return Settle(
        user_id=state.user_id,
        seen_segment=state.segment,
        seen_model_version=state.model_version,
        segment=segment,
        model_version=stored_version,
        change=change,
        updated_at=occurred_at if change is not None else "",
        seen_changes=state.changes,
        seen_feature_version=state.feature_version,
        drift_epoch=drift_epoch,
    )


def encode_change(
    *,
    user_id: int,
    sequence: int,
    previous_segment: int | None,
    segment: int | None,
    model_version: str,
    occurred_at: str,
    features: Mapping[str, Any],
    source: Source,
    drift_epoch: int | None = None,
) -> bytes:
    """The ``segment-changes`` value: UTF-8 JSON per ``schemas/segment_change.json``.

    ``sequence`` numbers the user's changes from 1 (see :func:`event_id`); ``occurred_at`` is
    the RFC 3339 ``created_at`` of the input event that caused the change (business time).
    ``drift_epoch`` (drift mode) follows ``model_version``; ``None`` leaves the key out.
    ``segment`` ``None`` unassigns the user (no longer every feature; ``features`` then holds
    the values they have, ``None`` where missing); their next segment is a change from null.
    """
    document: dict[str, Any] = {
        "event_id": event_id(user_id, sequence, model_version, source),
        "user_id": user_id,
        "sequence": sequence,
        "previous_segment": previous_segment,
        "segment": segment,
        "model_version": model_version,
    }
    if drift_epoch is not None:
        document["drift_epoch"] = drift_epoch
    document["occurred_at"] = occurred_at
    document["features"] = dict(features)
    document["source"] = {
        "topic": source.topic,
        "partition": source.partition,
        "offset": source.offset,
    }
    return msgspec.json.encode(document)


def encode_leave(
    *,
    user_id: int,
    sequence: int,
    previous_segment: int | None,
    model_version: str | None,
    occurred_at: str,
    source: Source,
) -> bytes:
    """The ``segment-changes`` value saying the user left: UTF-8 JSON per
    ``schemas/segment_left.json``.

    ``sequence`` continues the user's numbering (their last change's + 1) and is the last of
    this life: a later event of the user starts a new one, numbered from 1 again, with
    ``previous_segment`` null. ``previous_segment`` and ``model_version`` are those of the
    user's last change (both ``None`` when none was queued). ``event_id`` is :func:`event_id`
    of the same parts (an empty model version when none), unique since its source is the
    leave's own record.
    """
    document: dict[str, Any] = {
        "event_id": event_id(user_id, sequence, model_version or "", source),
        "user_id": user_id,
        "sequence": sequence,
        "left": True,
        "previous_segment": previous_segment,
        "model_version": model_version,
        "occurred_at": occurred_at,
        "source": {
            "topic": source.topic,
            "partition": source.partition,
            "offset": source.offset,
        },
    }
    return msgspec.json.encode(document)


def is_leave(document: Mapping[str, Any]) -> bool:
    """True when a decoded ``segment-changes`` value says its user left (:func:`encode_leave`)."""
    return document.get("left") is True


def ends_segment(document: Mapping[str, Any]) -> bool:
    """True when a decoded ``segment-changes`` value leaves its user without a segment: they
    left (:func:`is_leave`), or are no longer assignable (``segment`` null, :func:`plan_settle`).

    One rule for every reader: such a change ends the user's chain of segments, a tombstone on
    ``user-segments``; their next segment, if any, is a change from ``previous_segment`` null.
    """
    return is_leave(document) or document.get("segment", 0) is None


def change_sequence(document: Mapping[str, Any]) -> int:
    """The sequence number (from 1) of a decoded change event: the user's n-th change.

    A change queued by a version before changes carried ``sequence`` (and re-sent, byte for
    byte, after the upgrade) has it only inside its ``event_id``: it is found again by trying
    1, 2, ... up to :data:`LEGACY_SEQUENCE_LIMIT`.

    Raises:
        ValueError: neither a ``sequence`` nor an ``event_id`` made by :func:`event_id`.
    """
    sequence = document.get("sequence")
    if isinstance(sequence, int):
        return sequence
    try:
        wanted, user_id = document["event_id"], document["user_id"]
        version, origin = document["model_version"], document["source"]
        source = Source(origin["topic"], origin["partition"], origin["offset"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a change event: no {exc} in {document!r}") from exc
    for candidate in range(1, LEGACY_SEQUENCE_LIMIT + 1):
        if event_id(user_id, candidate, version, source) == wanted:
            return candidate
    raise ValueError(f"change {wanted} of user {user_id}: no sequence gives its event_id")


def current_segment(change: bytes) -> bytes:
    """The ``user-segments`` value of a change event (``schemas/user_segment.json``).

    Raises:
        ValueError: ``change`` is not a change event as :func:`encode_change` makes it.
    """
    document = msgspec.json.decode(change)
    if not isinstance(document, dict):
        raise ValueError(f"not a change event: {change!r}")
    try:
        current = {
            "user_id": document["user_id"],
            "sequence": change_sequence(document),
            "segment": document["segment"],
            "model_version": document["model_version"],
        }
        if "drift_epoch" in document:
            current["drift_epoch"] = document["drift_epoch"]
        current["updated_at"] = document["occurred_at"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a change event: no {exc} in {document!r}") from exc
    return msgspec.json.encode(current)


def outbox_outputs(
    pending: Mapping[int, Sequence[bytes]], changes_topic: str, segments_topic: str
) -> list[Output]:
    """The records that publish users' pending changes (as ``settle`` returns them).

    Per user: every change to ``changes_topic``, oldest first, byte for byte as queued; then
    one ``segments_topic`` record, the compacted current value, of the newest change only (the
    outbox's last: ``settle`` appends in sequence order); a tombstone when that change leaves
    the user without a segment (:func:`ends_segment`: a leave, or an unassigning change). An
    older pending change would only put an older value on the compacted topic, to be
    overwritten in the same batch.

    Raises:
        ValueError: a change is not a change event as :func:`encode_change` makes it.
    """
    outputs: list[Output] = []
    for user_id, changes in pending.items():
        if not changes:
            continue
        key = user_key(user_id)
        outputs.extend(Output(changes_topic, key, change) for change in changes)
        outputs.append(Output(segments_topic, key, _current_value(changes[-1])))
    return outputs


def _current_value(change: bytes) -> bytes | None:
    """The ``user-segments`` value of a user's newest change: its current segment, or a
    tombstone (``None``: compaction then drops the user) when the change leaves them without
    one (:func:`ends_segment`: they left, or were unassigned)."""
    if (b'"left":true' in change or b'"segment":null' in change) and ends_segment(
        msgspec.json.decode(change)
    ):
        return None
    return current_segment(change)
