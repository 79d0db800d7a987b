"""Reading one user as the worker stored it, with the time of their current segment.

``updated_at`` is the hash field ``ua`` (RFC 3339, the ``occurred_at`` of the last change queued)
when the worker wrote it, else the ``occurred_at`` of the newest change still in the user's
outbox, else unknown. The hash is decoded with the worker's own decoder, so the API shows exactly
what the stream knows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from segstream.stream.domain.user import UserState
from segstream.stream.state.codec import STATE_FIELDS, decode_state
from segstream.stream.state.store import RedisState

__all__ = ["StoredUser", "read_stored_user", "stored_user"]

UPDATED_AT_FIELD = b"ua"
"""Optional hash field: RFC 3339 time of the user's current segment."""

DRIFT_EPOCH_FIELD = b"de"
"""Optional hash field (drift mode): the drift epoch the user was last assigned with."""


@dataclass(frozen=True, slots=True)
class StoredUser:
    """A user's state as stored by the worker, with the time of its current segment."""

    state: UserState
    updated_at: str | None
    drift_epoch: int | None = None
    """Drift mode: the epoch of the shared centres of the user's last assignment; else None."""


def _latest_occurred_at(pending: Sequence[bytes]) -> str | None:
    for change in reversed(pending):  # oldest first: the newest is last
        try:
            value = json.loads(change).get("occurred_at")
        except (ValueError, AttributeError):
            continue
        if isinstance(value, str):
            return value
    return None


def stored_user(
    user_id: int, fields: Mapping[bytes, bytes], pending: Sequence[bytes]
) -> StoredUser | None:
    """Decode a user's raw hash and outbox; ``None`` when the hash is empty (unknown user)."""
    if not fields:
        return None
    reply = [0, *(fields.get(name) for name in STATE_FIELDS), len(pending)]
    state = decode_state(user_id, reply)
    stamp = fields.get(UPDATED_AT_FIELD)
    updated_at = stamp.decode() if stamp else _latest_occurred_at(pending)
    epoch = fields.get(DRIFT_EPOCH_FIELD)
    return StoredUser(
        state,
        updated_at if state.segment is not None else None,
        None if epoch is None else int(epoch),
    )


async def read_stored_user(state: RedisState, user_id: int) -> StoredUser | None:
    """One round trip: the user's hash and outbox. Redis errors propagate (redis-py's)."""
    fields, pending = await state.read_user(user_id)
    return stored_user(user_id, fields, pending)
