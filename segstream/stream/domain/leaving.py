"""A user leaving: the batch's rounds around a leave, and the erasure planned for it (pure).

A :class:`~segstream.stream.domain.events.UserLeft` (a tombstone on ``users``, a deleted
``users`` row) erases every key segstream holds for the user, in order with the user's other
events. The erasure is a ``settle`` row (:class:`Leave`): in one atomic step ``settle.lua``
takes the user out of their population bucket, deletes their hash and queues the leave event
(:func:`~segstream.stream.domain.changes.encode_leave`) in their outbox, which is then
published like every change (``segment-changes``) with a tombstone on ``user-segments``; once
acknowledged, the outbox entry is removed and no key of the user is left.

Within one batch only a user's last leave matters: what came before it is erased with it
(never applied, so never published). Events after it start the user afresh, in a second
round (:func:`split_rounds`) so that the erasure is stored before they are applied; that
round carries the leave's fence into the new state, so a redelivered batch finds the leave
applied and erases nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from segstream.stream.domain.changes import encode_leave
from segstream.stream.domain.events import Event, Source, UserLeft
from segstream.stream.domain.user import UserState

__all__ = ["Leave", "Round", "plan_leave", "split_rounds"]

ByUser = dict[int, list[tuple[Source, Event]]]
"""user -> that user's events, in arrival order (as :func:`parse_batch` groups them)."""


@dataclass(frozen=True, slots=True)
class Leave:
    """One user's erasure, a row of a ``settle`` call (compare-and-set like :class:`Settle`).

    The erasure happens only if the user's hash exists, its fence for the leave's topic and
    partition is below the leave's offset (a redelivered leave whose user already came back
    changes nothing), and its stored segment, model version and change count are still the
    ones seen (the leave event was numbered and worded from them).
    """

    user_id: int
    source: Source
    """Where the leave was read: its fence field and offset."""
    seen_segment: int | None
    seen_model_version: str | None
    seen_changes: int
    change: bytes
    """The leave event to queue (sequence ``seen_changes + 1``)."""


@dataclass(frozen=True, slots=True)
class Round:
    """Part of a batch applied in one pass: events to apply, and users to erase."""

    events: ByUser
    """user -> events to apply, in order (for a leaving user: none; the state is read)."""
    leaves: dict[int, tuple[Source, UserLeft]]
    """user -> the leave to apply to them in this round, after reading their state."""


def split_rounds(by_user: ByUser) -> list[Round]:
    """Split a batch's events into at most two rounds around each user's last leave.

    Round one: every user without a leave with all their events; every user with one, with
    their last leave only (what came before it is erased by it). Round two, only when some
    user has events after their last leave: those users, with that leave (applied as a fence
    only) followed by those events, which start them afresh. Users keep their order.
    """
    first: ByUser = {}
    leaves: dict[int, tuple[Source, UserLeft]] = {}
    second: ByUser = {}
    for user_id, events in by_user.items():
        last = None
        for index, (_, event) in enumerate(events):
            if isinstance(event, UserLeft):
                last = index
        if last is None:
            first[user_id] = events
            continue
        source, leave = events[last]
        assert isinstance(leave, UserLeft)
        first[user_id] = []
        leaves[user_id] = (source, leave)
        if last + 1 < len(events):
            second[user_id] = events[last:]
    rounds = [Round(first, leaves)]
    if second:
        rounds.append(Round(second, {}))
    return rounds


def plan_leave(state: UserState, source: Source, leave: UserLeft) -> Leave:
    """The erasure of the user whose stored state ``apply`` returned as ``state``.

    The leave event numbers on from the user's last change and names their last segment and
    model version; a user segstream does not know (no hash) gets the row too, which
    ``settle.lua`` then ignores: no event, nothing erased.
    """
    change = encode_leave(
        user_id=state.user_id,
        sequence=state.changes + 1,
        previous_segment=state.segment,
        model_version=state.model_version,
        occurred_at=leave.created_at,
        source=source,
    )
    return Leave(
        user_id=state.user_id,
        source=source,
        seen_segment=state.segment,
        seen_model_version=state.model_version,
        seen_changes=state.changes,
        change=change,
    )
