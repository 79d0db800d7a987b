"""Batch-versus-stream parity: does Redis hold the segment ``segstream assign`` gives?

The product's promise is that the stream assigns exactly what the batch pipeline assigns for
the same data and model. :func:`compare_with_batch` checks it for a set of users, reading
their stored segment and model version in one pipelined round trip per 5,000 users.

In drift mode the reference is ``segstream assign --with-drift`` with a ``drift_epoch``
column (one row per user and epoch): each user is compared with the row of the drift epoch
stored with them (hash field ``de``, the epoch of their last assignment).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from segstream.settings import Settings
from segstream.stream.clients.redis import sync_redis_client
from segstream.stream.state.keys import state_key, state_prefix

__all__ = ["ParityReport", "compare_with_batch"]

_PAGE = 5_000
# Hash fields of the user's segment and its model version (see lua/apply.lua).
_SEGMENT_FIELDS = ("seg", "mv", "de")


@dataclass(frozen=True)
class ParityReport:
    """Outcome of a comparison over ``users`` users the batch pipeline assigns.

    ``missing``: users with no segment in Redis; ``other_model``: users whose segment was
    assigned by another model version; ``other_epoch`` (drift mode): users stored with a drift
    epoch the reference has no rows for, or with none; ``mismatched``: same version (and
    epoch), other segment; ``examples``: up to 5 ``(user_id, batch segment, stream
    segment)`` of the missing and mismatched users.
    """

    users: int
    missing: int
    other_model: int
    mismatched: int
    examples: tuple[tuple[int, int, int | None], ...]
    other_epoch: int = 0

    @property
    def matches(self) -> int:
        return self.users - self.missing - self.other_model - self.other_epoch - self.mismatched

    @property
    def ok(self) -> bool:
        return self.matches == self.users


def compare_with_batch(settings: Settings, assigned: pd.DataFrame, version: str) -> ParityReport:
    """Compare ``assigned`` (``user_id``, ``segment``: ``segstream assign``'s output) to Redis.

    With a ``drift_epoch`` column (``assign --with-drift``), each user is compared with their
    row of the epoch stored with them.

    Raises:
        redis.RedisError: Redis is unreachable.
    """
    prefix = state_prefix(settings)
    by_epoch: dict[tuple[int, int], int] | None = None
    if "drift_epoch" in assigned.columns:
        by_epoch = {
            (int(uid), int(epoch)): int(segment)
            for uid, epoch, segment in zip(
                assigned["user_id"], assigned["drift_epoch"], assigned["segment"], strict=True
            )
        }
        assigned = assigned.drop_duplicates("user_id")
    user_ids = assigned["user_id"].to_numpy(dtype=np.int64)
    expected = assigned["segment"].to_numpy(dtype=np.int64)
    client = sync_redis_client(settings)
    stored: list[list[bytes | None]] = []
    try:
        for start in range(0, len(user_ids), _PAGE):
            pipe = client.pipeline(transaction=False)
            for uid in user_ids[start : start + _PAGE]:
                pipe.hmget(state_key(prefix, int(uid)), *_SEGMENT_FIELDS)
            stored.extend(pipe.execute())
    finally:
        client.close()
    missing = other_model = other_epoch = mismatched = 0
    examples: list[tuple[int, int, int | None]] = []
    for uid, want, (segment, model_version, epoch) in zip(user_ids, expected, stored, strict=True):
        if segment is None:
            missing += 1
            got = None
        elif model_version is None or model_version.decode() != version:
            other_model += 1
            got = int(segment)
        else:
            if by_epoch is not None:  # drift mode: the row of the user's stored epoch
                key = None if epoch is None else (int(uid), int(epoch))
                if key not in by_epoch:
                    other_epoch += 1
                    continue
                want = by_epoch[key]
            if int(segment) == want:
                continue
            mismatched += 1
            got = int(segment)
        if len(examples) < 5:
            examples.append((int(uid), int(want), got))
    return ParityReport(
        len(user_ids), missing, other_model, mismatched, tuple(examples), other_epoch
    )
