"""``segstream reassign`` racing a worker, made certain instead of left to timing: the worker's
event lands between reassign's read of a user and its write. Reassign then assigned from
features that are no longer the user's; its write must be refused and counted as a conflict,
whatever the segment and model version say (the worker's event need not change either)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import redis
import redis.asyncio as aioredis

from segstream.stream.domain.assignment import assign_states
from segstream.stream.domain.batch import plan_settles
from segstream.stream.domain.events import Event, OrderEvent, OrderItem, Source, UserEvent
from segstream.stream.domain.topics import Output, Topics
from segstream.stream.domain.user import UserState
from segstream.stream.lifecycle.reassign import Reassigner
from segstream.stream.state.store import RedisState
from segstream.stream.worker.assigner import Assigner
from segstream.training.artifact import publish_current, save_model
from tests.small_model import make_model

PREFIX = "race:"
TOPICS = Topics("users", "orders", "segment-changes", "user-segments", "dead-letters")
RACED, QUIET = (1, 2), 3
"""Users the worker has an event for during reassign's batch, and one it has none for."""

Batch = Mapping[int, Sequence[tuple[Source, Event]]]


class RecordingSender:
    """Keeps what reassign publishes (the broker is not what this test is about)."""

    def __init__(self) -> None:
        self.outputs: list[Output] = []

    async def publish(self, outputs: Sequence[Output]) -> None:
        self.outputs += outputs


class WorkerInTheGap(RedisState):
    """Reassign's view of Redis, where a worker applies ``batch`` right after reassign's read.

    Reassign reads users by calling ``apply`` without events; the worker's batch (through its
    own :class:`RedisState`, as a worker does) goes in just after that read, once.
    """

    def __init__(self, client: aioredis.Redis, worker: RedisState, batch: Batch) -> None:
        super().__init__(client, PREFIX)
        self.worker = worker
        self.batch = batch
        self.worker_states: list[UserState] = []
        """The worker's states after its apply: what it assigns and settles from."""

    async def apply(
        self,
        by_user: Mapping[int, Sequence[tuple[Source, Event]]],
        clear: Mapping[int, Sequence[bytes]] | None = None,
    ) -> list[UserState]:
        states = await super().apply(by_user, clear)
        if self.batch and not any(by_user.values()):
            self.worker_states = await self.worker.apply(self.batch)
            self.batch = {}
        return states


def profile(user_id: int) -> tuple[Source, Event]:
    event = UserEvent(user_id, 30, "F", "Japan", "Search", "2023-01-01T00:00:00Z")
    return Source("users", 0, user_id), event


def order(user_id: int, order_id: int) -> tuple[Source, Event]:
    items = (OrderItem(order_id, "Zara", "Jeans", 9.5),)
    event = OrderEvent(order_id, user_id, "Complete", "2023-01-02T00:00:00Z", items)
    return Source("orders", 0, order_id), event


def stored(states: Sequence[UserState]) -> dict[int, tuple[int | None, str | None, int, int]]:
    """user_id -> (segment, model version, changes queued, total_orders)."""
    return {s.user_id: (s.segment, s.model_version, s.changes, s.total_orders) for s in states}


async def race(redis_url: str, models: Path) -> None:
    v1, v2 = make_model("v1"), make_model("v2")
    save_model(v1, models / "v1")
    save_model(v2, models / "v2")
    publish_current(models, models / "v2")  # reassign runs with v2; the worker is still on v1
    client = aioredis.Redis.from_url(redis_url)
    worker = RedisState(client, PREFIX)
    try:
        users = (*RACED, QUIET)
        first = {uid: [profile(uid), order(uid, 100 * uid)] for uid in users}
        before = await worker.apply(first)
        # Three more orders move a user to another segment (under either version: one geometry).
        more = {uid: [order(uid, 100 * uid + n) for n in (1, 2, 3)] for uid in RACED}
        old = int(assign_states(v2, before[:1])[0])
        new = int(assign_states(v2, [dataclasses.replace(before[0], total_orders=4)])[0])
        assert old != new, "the worker's orders must move the user for this test to mean much"

        # As a worker on v1 left them: user 1 already in the segment its next orders give it
        # (the worker will have nothing to write for it), user 2 in its present features' one,
        # user 3 (no event coming) in another, so that reassign moves it.
        worker_segments = {1: new, 2: old, 3: new}
        segments = np.array([worker_segments[s.user_id] for s in before])
        pending = await worker.settle(plan_settles(before, segments, "v1", first))
        await worker.clear(pending)

        gap = WorkerInTheGap(client, worker, more)
        sender = RecordingSender()
        report = await Reassigner(gap, Assigner(models), sender, TOPICS).run()

        figures = (report.changed, report.version_only, report.unchanged, report.conflicts)
        assert figures == (1, 0, 0, len(RACED)), report.as_dict()  # only the quiet user moved
        after = stored(await worker.apply(dict.fromkeys(users, ())))
        assert after[1] == (new, "v1", 1, 4), "reassign stored a segment of the old features"
        assert after[2] == (old, "v1", 1, 4), "reassign stored a version for the old features"
        assert after[QUIET] == (old, "v2", 2, 1)
        published = [o for o in sender.outputs if o.topic == TOPICS.segment_changes]
        assert [o.key for o in published] == [b"3"]

        # The worker settles what it read (user 2 moves; user 1 keeps its segment), then a
        # rerun of reassign, racing nothing, brings every user to v2 from their own features.
        moved = assign_states(v1, gap.worker_states)
        await worker.settle(plan_settles(gap.worker_states, moved, "v1", more))
        rerun = await Reassigner(worker, Assigner(models), RecordingSender(), TOPICS).run()
        figures = (rerun.changed, rerun.version_only, rerun.unchanged, rerun.conflicts)
        assert figures == (0, 2, 1, 0), rerun.as_dict()
        final = await worker.apply(dict.fromkeys(users, ()))
        want = assign_states(v2, final).tolist()
        assert [(s.segment, s.model_version) for s in final] == [(seg, "v2") for seg in want]
        assert stored(final)[2][:2] == (new, "v2")
    finally:
        await client.aclose()


def test_a_reassign_write_computed_before_a_workers_event_is_refused(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    asyncio.run(race(redis_url, tmp_path / "models"))
