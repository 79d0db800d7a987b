"""The Lua state scripts on the real Redis: fencing, counting once, tie rule, outbox, memory."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest
import redis
import redis.asyncio as aioredis

from segstream.stream.domain.events import Event, OrderEvent, OrderItem, Source, UserEvent
from segstream.stream.domain.user import Settle, UserState
from segstream.stream.state.store import RedisState
from segstream.training.features import most_frequent

PREFIX = "t:"
USERS, ORDERS = "users-t", "orders-t"


@pytest.fixture
def run(redis_client: redis.Redis, redis_url: str) -> Iterator[RedisState]:
    """A RedisState on the flushed test database, driven through one private event loop."""
    loop = asyncio.new_event_loop()
    client = aioredis.Redis.from_url(redis_url)
    state = RedisState(client, PREFIX)
    try:
        yield _Sync(state, loop)  # type: ignore[misc]
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


class _Sync:
    """Calls RedisState's coroutines to completion, so tests read top to bottom."""

    def __init__(self, state: RedisState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop

    def apply(self, user_id: int, *events: tuple[Source, Event]) -> UserState:
        return self.loop.run_until_complete(self.state.apply({user_id: list(events)}))[0]

    def settle(self, *settles: Settle) -> dict[int, list[bytes]]:
        return self.loop.run_until_complete(self.state.settle(settles))

    def clear(self, published: dict[int, list[bytes]]) -> None:
        self.loop.run_until_complete(self.state.clear(published))

    def memory(self, user_ids: Sequence[int]) -> list[int]:
        return self.loop.run_until_complete(self.state.memory_usage(user_ids))


def profile(user_id: int = 1, age: int = 30, country: str = "Japan") -> UserEvent:
    return UserEvent(user_id, age, "F", country, "Search", "2023-01-01T00:00:00Z")


def order(order_id: int, *brands: str, user_id: int = 1, category: str = "Jeans") -> OrderEvent:
    items = tuple(OrderItem(order_id * 10 + i, b, category, 9.5) for i, b in enumerate(brands))
    return OrderEvent(order_id, user_id, "Processing", "2023-01-02T00:00:00Z", items)


def at(offset: int, topic: str = ORDERS, partition: int = 0) -> Source:
    return Source(topic, partition, offset)


def test_profile_and_orders_make_the_features(run: _Sync) -> None:
    run.apply(1, (at(5, USERS), profile(age=41)))
    state = run.apply(1, (at(0), order(10, "Zara", "Alpha")), (at(1), order(11, "Zara")))
    assert state.applied == 2
    assert state.assignable
    assert state.features() == {
        "age": 41,
        "gender": "F",
        "country": "Japan",
        "traffic_source": "Search",
        "total_orders": 2,
        "most_frequent_brand": "Zara",
        "most_frequent_category": "Jeans",
    }
    assert state.segment is None
    assert state.pending == 0


def test_orders_before_the_profile_are_counted_but_not_assignable(run: _Sync) -> None:
    state = run.apply(1, (at(0), order(10, "Zara")))
    assert (state.total_orders, state.assignable) == (1, False)
    state = run.apply(1, (at(0, USERS), profile()))
    assert state.assignable
    assert state.total_orders == 1


def test_redelivered_events_change_nothing(run: _Sync) -> None:
    events = [(at(3), order(10, "Zara")), (at(4, USERS), profile(age=20))]
    first = run.apply(1, *events)
    again = run.apply(1, *events)
    older = run.apply(1, (at(2), order(99, "Other")))
    assert (first.applied, again.applied, older.applied) == (2, 0, 0)
    assert again.features() == first.features() == older.features()


def test_resent_order_is_counted_once(run: _Sync) -> None:
    run.apply(1, (at(0), order(10, "Zara")))
    state = run.apply(1, (at(1), order(10, "Zara")), (at(2), order(10, "Zara", "Zara")))
    assert state.applied == 2
    assert state.total_orders == 1
    assert run.apply(1, (at(3), order(11, "Alpha", "Alpha"))).most_frequent_brand == "Alpha"


def test_fences_are_per_topic_and_partition(run: _Sync) -> None:
    run.apply(1, (at(50, ORDERS, 0), order(10, "Zara")))
    state = run.apply(1, (at(1, ORDERS, 1), order(11, "Zara")), (at(1, USERS, 0), profile()))
    assert state.applied == 2
    assert state.total_orders == 2


def test_missing_brand_or_category_is_not_counted(run: _Sync) -> None:
    run.apply(1, (at(0, USERS), profile()))
    state = run.apply(1, (at(0), order(10, "", category="")))
    assert (state.total_orders, state.most_frequent_brand, state.assignable) == (1, None, False)


@pytest.mark.parametrize("seed", range(6))
def test_most_frequent_in_lua_agrees_with_python_on_ties_and_non_ascii(
    run: _Sync, seed: int
) -> None:
    rng = random.Random(seed)
    names = ["NygÃ¥rd", "Nygard", "nygard", "Zoë", "Zoe", "Éclat", "Eclat", "B", "a", "ä", "日本"]
    counts: Counter[str] = Counter()
    for offset in range(40):
        brands = [rng.choice(names[: 3 + seed]) for _ in range(rng.randint(1, 4))]
        counts.update(brands)
        state = run.apply(1, (at(offset), order(offset + 1, *brands, category=brands[-1])))
        assert state.most_frequent_brand == most_frequent(counts), (offset, dict(counts))
        assert state.total_orders == offset + 1


def test_settle_queues_a_change_once_and_clear_removes_it(run: _Sync) -> None:
    change = b'{"event_id": "e1"}'
    first = Settle(1, None, None, 3, "v1", change)
    assert run.settle(first) == {1: [change]}
    # The same call again (a retry) sees segment 3 stored, not None: nothing queued twice.
    assert run.settle(first) == {1: [change]}
    state = run.apply(1, (at(0), order(10, "Zara")))
    assert (state.segment, state.model_version, state.pending, state.changes) == (3, "v1", 1, 1)
    run.clear({1: [change]})
    assert run.settle(Settle(1, 3, "v1", 3, "v1", None)) == {}
    second = b'{"event_id": "e2"}'
    seen = state.feature_version
    stale = Settle(1, 3, "v1", 0, "v1", second, seen_changes=0, seen_feature_version=seen)
    assert run.settle(stale) == {}  # it saw 0 changes, but 1 was queued since: refused
    fresh = Settle(1, 3, "v1", 0, "v1", second, seen_changes=1, seen_feature_version=seen)
    assert run.settle(fresh) == {1: [second]}
    assert run.apply(1).changes == 2


def test_only_calls_that_change_the_features_bump_their_version(run: _Sync) -> None:
    assert run.apply(1, (at(0, USERS), profile())).feature_version == 1
    several = run.apply(1, (at(0), order(10, "Zara")), (at(1), order(11, "Zara")))
    assert several.feature_version == 2  # one call, one bump
    assert run.apply(1, (at(2), order(10, "Zara"))).feature_version == 2  # a re-sent order
    assert run.apply(1, (at(1), order(12, "Zara"))).feature_version == 2  # a redelivery
    assert run.apply(1).feature_version == 2  # a read


def test_a_settle_from_features_an_event_changed_since_is_refused(run: _Sync) -> None:
    # Two writers read the user, one applies an order (segment 3 still), the other writes.
    first = run.apply(1, (at(0, USERS), profile()), (at(0), order(10, "Zara")))
    run.settle(Settle(1, None, None, 3, "v1", b'{"event_id": "a"}', "t", 0, first.feature_version))
    read = run.apply(1)
    newer = run.apply(1, (at(1), order(11, "Zara")))
    assert (newer.segment, newer.model_version, newer.changes) == (3, "v1", 1)
    stale = b'{"event_id": "stale"}'
    row = Settle(1, 3, "v1", 4, "v1", stale, "t", read.changes, read.feature_version)
    outcome = run.loop.run_until_complete(run.state.settle_outcome([row]))
    assert outcome.refused == {1}
    assert stale not in outcome.pending.get(1, [])
    row = Settle(1, 3, "v1", 4, "v1", stale, "t", newer.changes, newer.feature_version)
    assert run.settle(row) == {1: [b'{"event_id": "a"}', stale]}
    assert run.apply(1).segment == 4


def test_a_version_only_settle_stores_the_version_and_queues_nothing(run: _Sync) -> None:
    state = run.apply(1, (at(0, USERS), profile()), (at(0), order(10, "Zara")))
    run.settle(Settle(1, None, None, 3, "v1", b"c", "t", 0, state.feature_version))
    run.clear({1: [b"c"]})
    seen = run.apply(1)
    row = Settle(1, 3, "v1", 3, "v2", None, "", seen.changes, seen.feature_version)
    outcome = run.loop.run_until_complete(run.state.settle_outcome([row, row]))
    assert (outcome.pending, outcome.refused) == ({}, frozenset())  # one row a user
    after = run.apply(1)
    assert (after.segment, after.model_version, after.changes, after.pending) == (3, "v2", 1, 0)
    again = run.loop.run_until_complete(run.state.settle_outcome([row]))
    assert again.refused == {1}  # it saw v1 stored: a repeat changes nothing
    gone = Settle(2, 3, "v1", 3, "v2", None)
    assert run.loop.run_until_complete(run.state.settle_outcome([gone])).refused == {2}
    assert run.apply(2).segment is None  # a missing user is not recreated


def test_memory_per_typical_user_is_well_under_a_kilobyte(run: _Sync) -> None:
    for uid in range(1, 101):
        run.apply(uid, (at(uid, USERS, uid % 4), profile(uid, country="United States")))
        for n in range(2):
            brands = [f"Brand name {uid * 7 + n + i}" for i in range(2)]
            run.apply(uid, (at(uid * 10 + n, "orders", uid % 4), order(uid * 10 + n, *brands)))
    version = "20260101T000000-abcdef"
    stamp = "2023-01-02T03:04:05.123456Z"
    pending = run.settle(
        *(Settle(uid, None, None, 2, version, b"c", stamp) for uid in range(1, 101))
    )
    run.clear(pending)
    sizes = run.memory(range(1, 101))
    assert max(sizes) < 1024, sizes


def _windowed(run: _Sync, window: int) -> _Sync:
    """The same Redis and loop, with an order dedupe window of ``window`` ids."""
    return _Sync(RedisState(run.state.client, PREFIX, order_window=window), run.loop)


def _fields(redis_client: redis.Redis, user_id: int = 1) -> dict[bytes, bytes]:
    return redis_client.hgetall(f"{PREFIX}{{u:{user_id}}}")


def _order_ids(fields: dict[bytes, bytes]) -> list[int]:
    return sorted(int(name[2:]) for name in fields if name.startswith(b"o:"))


def test_state_per_user_is_bounded_whatever_the_number_of_orders(
    run: _Sync, redis_client: redis.Redis
) -> None:
    brands, categories = ["Calvin Klein", "Levi's", "Nike", "Zara"], ["Jeans", "Tops & Tees"]
    window = run.state.order_window
    seen: dict[int, tuple[int, int, set[bytes]]] = {}
    run.apply(1, (at(0, USERS), profile()))
    for n in range(500):
        items = (brands[n % 4], brands[(n + 1) % 4])
        state = run.apply(1, (at(n), order(1_000_000 + 37 * n, *items, category=categories[n % 2])))
        assert state.total_orders == n + 1
        if n + 1 in (1, 100, 500):
            fields = _fields(redis_client)
            other = {name for name in fields if not name.startswith(b"o:")}
            seen[n + 1] = (len(fields), run.memory([1])[0], other)
    assert len(_order_ids(_fields(redis_client))) == window
    (fields_100, bytes_100, other_100), (fields_500, bytes_500, other_500) = seen[100], seen[500]
    assert fields_500 == fields_100 == window + len(other_100)
    assert other_500 == other_100  # the same profile, counts, fences, floor: nothing else grew
    assert bytes_500 <= bytes_100 + 64, (bytes_100, bytes_500)
    assert redis_client.object("encoding", f"{PREFIX}{{u:1}}") == b"listpack"
    print("bytes per user at 1, 100, 500 orders:", seen[1][1], bytes_100, bytes_500)


def test_the_window_keeps_the_highest_ids_and_takes_older_resends_as_counted(
    run: _Sync, redis_client: redis.Redis
) -> None:
    small = _windowed(run, 3)
    for offset, order_id in enumerate((10, 20, 30, 40, 50)):
        assert small.apply(1, (at(offset), order(order_id, "Zara"))).total_orders == offset + 1
    fields = _fields(redis_client)
    assert (_order_ids(fields), fields[b"of"]) == ([30, 40, 50], b"20")
    resent = [(at(5), order(40, "Zara")), (at(6), order(10, "Zara")), (at(7), order(20, "Zara"))]
    assert small.apply(1, *resent).total_orders == 5  # in the window, or at or below its floor
    # Above the floor and not remembered: never counted, so counted now (out of order).
    state = small.apply(1, (at(8), order(35, *["Alpha"] * 6)))
    assert (state.total_orders, state.most_frequent_brand) == (6, "Alpha")
    fields = _fields(redis_client)
    assert (_order_ids(fields), fields[b"of"]) == ([35, 40, 50], b"30")


@pytest.mark.parametrize("split", [1, 2, 7])
def test_the_order_count_does_not_depend_on_how_events_were_batched(
    run: _Sync, redis_client: redis.Redis, split: int
) -> None:
    rng = random.Random(split)
    ids = [rng.randint(1, 40) for _ in range(60)]  # out of order, re-sent, some below the floor
    events = [(at(offset), order(order_id, "Zara")) for offset, order_id in enumerate(ids)]
    small = _windowed(run, 4)
    one_by_one = [small.apply(1, event).total_orders for event in events][-1]
    reference = _fields(redis_client)
    redis_client.flushdb()
    for start in range(0, len(events), split):
        state = small.apply(1, *events[start : start + split])
    assert state.total_orders == one_by_one
    fields = _fields(redis_client)
    del fields[b"fv"], reference[b"fv"]  # one bump per call, by design
    assert fields == reference


def test_state_written_before_the_window_is_trimmed_when_the_user_is_next_touched(
    run: _Sync, redis_client: redis.Redis
) -> None:
    for offset in range(10):
        run.apply(1, (at(offset), order(100 + offset, "Zara", category="Jeans")))
    run.apply(1, (at(0, USERS), profile()))
    before = run.apply(1)
    # As the script before the window left it: every id kept, no floor.
    key = f"{PREFIX}{{u:1}}"
    redis_client.hset(key, mapping={f"o:{i}": 1 for i in range(1, 100)})
    redis_client.hincrby(key, "n", 99)
    small = _windowed(run, 5)
    touched = small.apply(1, (at(1, USERS), profile()))  # a profile event is enough
    fields = _fields(redis_client)
    assert (_order_ids(fields), fields[b"of"]) == ([105, 106, 107, 108, 109], b"104")
    assert touched.total_orders == before.total_orders + 99
    assert touched.most_frequent_brand == before.most_frequent_brand
    assert small.apply(1, (at(10), order(50, "Zara"))).total_orders == touched.total_orders
    assert small.apply(1, (at(11), order(110, "Zara"))).total_orders == touched.total_orders + 1


def test_published_changes_are_cleared_in_the_next_apply_round_trip(run: _Sync) -> None:
    first, second = b'{"event_id": "a"}', b'{"event_id": "b"}'
    run.settle(Settle(1, None, None, 1, "v1", first), Settle(2, None, None, 2, "v1", second))
    states = run.loop.run_until_complete(
        run.state.apply({1: [(at(0), order(10, "Zara"))]}, clear={1: [first], 2: [second]})
    )
    assert states[0].pending == 0
    assert run.settle(Settle(2, 2, "v1", 2, "v1", None)) == {}


def test_cluster_mode_calls_per_hash_slot_and_gets_the_same_states(
    run: _Sync, redis_url: str
) -> None:
    batch = {
        uid: [(at(uid, USERS, 0), profile(uid, age=20 + uid % 50)), (at(uid), order(uid, "Zoë"))]
        for uid in range(1, 60)
    }
    standalone = run.loop.run_until_complete(run.state.apply(batch))
    client = aioredis.Redis.from_url(redis_url)
    try:
        cluster = RedisState(client, "c:", cluster=True)
        assert len(cluster._groups(list(batch))) == len(batch)  # one slot per user here
        by_slot = run.loop.run_until_complete(cluster.apply(batch))
        rows = [  # odd users' rows carry a stale features version
            Settle(s.user_id, None, None, 1, "v1", b"c", "t", 0, s.feature_version - s.user_id % 2)
            for s in by_slot
        ]
        outcome = run.loop.run_until_complete(cluster.settle_outcome(rows))
    finally:
        run.loop.run_until_complete(client.aclose())
    assert by_slot == standalone
    assert outcome.refused == {uid for uid in batch if uid % 2}
    assert set(outcome.pending) == {uid for uid in batch if uid % 2 == 0}


def test_settle_stores_the_drift_epoch_with_every_write_and_a_write_without_drift_drops_it(
    run: _Sync, redis_client: redis.Redis
) -> None:
    state = run.apply(1, (at(0, USERS), profile()), (at(0), order(10, "Zara")))
    fv = state.feature_version
    run.settle(Settle(1, None, None, 3, "v1", b"c", "t", 0, fv, drift_epoch=4))
    assert _fields(redis_client)[b"de"] == b"4"
    # Same segment and version under a newer epoch: the epoch alone is stored, no event.
    row = Settle(1, 3, "v1", 3, "v1", None, "", 1, fv, drift_epoch=9)
    outcome = run.loop.run_until_complete(run.state.settle_outcome([row]))
    assert (outcome.pending, outcome.refused) == ({1: [b"c"]}, frozenset())
    fields = _fields(redis_client)
    assert (fields[b"de"], fields[b"seg"], fields[b"cs"]) == (b"9", b"3", b"1")
    # An epoch-only row from features an event changed since is refused like any write.
    newer = run.apply(1, (at(1), order(11, "Zara")))
    assert newer.feature_version > fv
    stale = Settle(1, 3, "v1", 3, "v1", None, "", 1, fv, drift_epoch=12)
    assert run.loop.run_until_complete(run.state.settle_outcome([stale])).refused == {1}
    assert _fields(redis_client)[b"de"] == b"9"
    # Drift off: the next write (here a model version) removes the epoch.
    plain = Settle(1, 3, "v1", 3, "v2", None, "", 1, newer.feature_version)
    run.settle(plain)
    fields = _fields(redis_client)
    assert (fields[b"mv"], b"de" in fields) == (b"v2", False)


def test_refused_rows_of_one_call_are_reported_for_their_own_users(run: _Sync) -> None:
    # One script call for five users; the 2nd and 4th rows saw an older features version.
    states = run.loop.run_until_complete(
        run.state.apply({uid: [(at(uid, USERS), profile(uid))] for uid in range(1, 6)})
    )
    rows = [
        Settle(s.user_id, None, None, 2, "v1", f"c{s.user_id}".encode(), "t", 0,
               s.feature_version - (s.user_id in (2, 4)))
        for s in states
    ]  # fmt: skip
    outcome = run.loop.run_until_complete(run.state.settle_outcome(rows))
    assert outcome.refused == {2, 4}
    assert outcome.pending == {1: [b"c1"], 3: [b"c3"], 5: [b"c5"]}
    assert [run.apply(uid).segment for uid in range(1, 6)] == [2, None, 2, None, 2]


def test_scripts_the_server_lost_are_loaded_again_transparently(
    run: _Sync, redis_client: redis.Redis
) -> None:
    # A restarted Redis (or SCRIPT FLUSH) has an empty script cache: EVALSHA says NOSCRIPT.
    redis_client.script_flush()
    state = run.apply(1, (at(0, USERS), profile()), (at(0), order(10, "Zara")))
    assert (state.applied, state.total_orders) == (2, 1)
    redis_client.script_flush()
    row = Settle(1, None, None, 3, "v1", b"c", "t", 0, state.feature_version)
    assert run.settle(row) == {1: [b"c"]}
