"""A user leaving, in Redis: the settle script's erasure on the real server.

Every key of the user goes (SCAN of the keyspace), the population counters stay equal to a
count of the hashes, a redelivered leave changes nothing, a stale one is refused, and a user
who comes back after a leave in the same batch keeps that leave's fence.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
import redis
import redis.asyncio as aioredis

from segstream.stream.domain.events import (
    Event,
    Source,
    UserLeft,
)
from segstream.stream.domain.leaving import Leave, plan_leave
from segstream.stream.domain.user import Settle, SettleOutcome, UserState
from segstream.stream.state.populations import count_populations, read_populations
from segstream.stream.state.store import RedisState
from tests.integration.stream.user_events import profile_and_order

LEFT_AT = "2026-12-06T21:00:00.000Z"


class _Redis:
    """One RedisState on the session's server, with helpers that run to completion."""

    def __init__(self, url: str, prefix: str, cluster: bool) -> None:
        self.url, self.prefix, self.cluster = url, prefix, cluster

    def run(self, steps):  # type: ignore[no-untyped-def]
        async def go():  # type: ignore[no-untyped-def]
            client = aioredis.Redis.from_url(self.url)
            try:
                return await steps(RedisState(client, self.prefix, cluster=self.cluster))
            finally:
                await client.aclose()

        return asyncio.run(go())

    def apply(self, by_user: dict[int, Sequence[tuple[Source, Event]]]) -> list[UserState]:
        return self.run(lambda state: state.apply(by_user))

    def settle(self, rows: Sequence[Settle | Leave]) -> SettleOutcome:
        return self.run(lambda state: state.settle_outcome(rows))

    def publish(self, pending: dict[int, list[bytes]]) -> None:
        """What the worker does once the broker acknowledged: clear the outboxes."""
        self.run(lambda state: state.clear(pending))

    def assign(self, uids: Sequence[int], segment: int, version: str) -> None:
        states = self.apply(dict.fromkeys(uids, ()))
        outcome = self.settle(
            [
                Settle(
                    s.user_id,
                    s.segment,
                    s.model_version,
                    segment,
                    version,
                    json.dumps({"sequence": s.changes + 1}).encode(),
                    "2023-01-02T00:00:00Z",
                    seen_changes=s.changes,
                    seen_feature_version=s.feature_version,
                )
                for s in states
            ]
        )
        assert not outcome.refused
        self.publish(outcome.pending)

    def leave(self, uid: int, source: Source) -> Leave:
        (state,) = self.apply({uid: ()})
        return plan_leave(state, source, UserLeft(uid, LEFT_AT))

    def populations(self) -> tuple[dict, int]:
        async def both(state: RedisState):  # type: ignore[no-untyped-def]
            kept = await read_populations(state.client, self.prefix, cluster=self.cluster)
            counted = await count_populations(state.client, self.prefix, cluster=self.cluster)
            assert (kept.by_version, kept.unassigned) == (counted.by_version, counted.unassigned)
            return {v: dict(s) for v, s in kept.by_version.items()}, kept.unassigned

        return self.run(both)


def _user_keys(client: redis.Redis, prefix: str, uid: int) -> list[bytes]:
    """Every key of the keyspace under the user's hash tag (SCAN, any type)."""
    return sorted(client.scan_iter(match=f"{prefix}*{{u:{uid}}}*", count=1000))


@pytest.mark.parametrize("cluster", [False, True], ids=["one-hash", "per-slot"])
def test_a_leave_erases_every_key_and_keeps_the_populations_exact(
    redis_client: redis.Redis, redis_url: str, cluster: bool
) -> None:
    prefix = f"leave{int(cluster)}:"
    store = _Redis(redis_url, prefix, cluster)
    store.apply({uid: profile_and_order(uid, 1) for uid in range(1, 7)})
    store.assign([1, 2, 3], 2, "v1")
    store.assign([4], 0, "v1")
    assert store.populations() == ({"v1": {2: 3, 0: 1}}, 2)

    # User 1 (assigned, one change) and user 5 (never assigned) leave; 99 was never seen.
    rows = [
        store.leave(1, Source("users", 0, 10)),
        store.leave(5, Source("users", 0, 11)),
        store.leave(99, Source("users", 0, 12)),
    ]
    outcome = store.settle(rows)
    assert not outcome.refused
    assert set(outcome.pending) == {1, 5}
    left = {uid: json.loads(changes[-1]) for uid, changes in outcome.pending.items()}
    assert (left[1]["sequence"], left[1]["previous_segment"], left[1]["model_version"]) == (
        2, 2, "v1",
    )  # fmt: skip
    assert (left[5]["sequence"], left[5]["previous_segment"]) == (1, None)
    assert store.populations() == ({"v1": {2: 2, 0: 1}}, 1)
    # Until the broker acknowledged the leave event only the outbox remains; then nothing.
    assert _user_keys(redis_client, prefix, 1) == [f"{prefix}{{u:1}}:ob".encode()]
    store.publish(outcome.pending)
    for uid in (1, 5, 99):
        assert _user_keys(redis_client, prefix, uid) == []
    assert _user_keys(redis_client, prefix, 2) == [f"{prefix}{{u:2}}".encode()]

    # The same rows again (a redelivered batch): nothing to erase, nothing queued.
    again = store.settle(rows)
    assert (again.pending, again.refused) == ({}, frozenset())
    assert store.populations() == ({"v1": {2: 2, 0: 1}}, 1)


def test_a_stale_leave_is_refused_and_erases_nothing(
    redis_client: redis.Redis, redis_url: str
) -> None:
    prefix = "leavestale:"
    store = _Redis(redis_url, prefix, False)
    store.apply({7: profile_and_order(7, 1)})
    stale = store.leave(7, Source("users", 0, 5))
    store.assign([7], 3, "v1")  # another writer (reassign) moved the user in between
    outcome = store.settle([stale])
    assert outcome.refused == {7}
    assert _user_keys(redis_client, prefix, 7) == [f"{prefix}{{u:7}}".encode()]
    assert store.populations() == ({"v1": {3: 1}}, 0)
    fresh = store.settle([store.leave(7, Source("users", 0, 5))])
    assert not fresh.refused
    assert json.loads(fresh.pending[7][-1])["sequence"] == 2
    store.publish(fresh.pending)
    assert _user_keys(redis_client, prefix, 7) == []
    assert store.populations() == ({}, 0)


def test_a_user_back_after_a_leave_keeps_its_fence_so_a_redelivered_leave_is_applied_once(
    redis_client: redis.Redis, redis_url: str
) -> None:
    prefix = "leaveback:"
    store = _Redis(redis_url, prefix, False)
    store.apply({8: profile_and_order(8, 1)})
    store.assign([8], 1, "v1")
    leave_source = Source("users", 0, 20)
    outcome = store.settle([store.leave(8, leave_source)])
    store.publish(outcome.pending)
    # The second round of the batch: the leave as a fence, then the new life's events.
    back = [(leave_source, UserLeft(8, LEFT_AT)), *profile_and_order(8, 21)]
    (state,) = store.apply({8: back})
    assert (state.segment, state.changes, state.total_orders) == (None, 0, 1)
    assert store.populations() == ({}, 1)
    # The whole batch redelivered: the leave finds its fence stored and erases nothing.
    redelivered = store.settle([store.leave(8, leave_source)])
    assert (redelivered.pending, redelivered.refused) == ({}, frozenset())
    (again,) = store.apply({8: back})
    assert (again.applied, again.total_orders, again.feature_version) == (
        0,
        1,
        state.feature_version,
    )
    # A fence alone never creates a user.
    store.apply({9: [(Source("users", 0, 30), UserLeft(9, LEFT_AT))]})
    assert _user_keys(redis_client, prefix, 9) == []
    assert store.populations() == ({}, 1)
