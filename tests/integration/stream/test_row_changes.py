"""Row changes on the real Redis: the state equals the feature SQL over the current rows.

Each change kind's rule (``apply.lua``'s row changes, the product catalogue and its routed
re-derivations), then random mixes of inserts, deletes, moves and product corrections,
delivered in any interleaving of the tables' topics and partly twice, compared with
``features.sql`` run by DuckDB over the rows the mix left.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
import redis
import redis.asyncio as aioredis

from segstream.stream.domain.batch import plan_settles
from segstream.stream.domain.changes import outbox_outputs
from segstream.stream.domain.events import Event, Source, UserEvent
from segstream.stream.domain.rows import (
    Change,
    ItemRow,
    OrderRow,
    ProductRefresh,
    ProductRow,
    Truncate,
)
from segstream.stream.domain.topics import Output
from segstream.stream.domain.user import SettleOutcome, UserState
from segstream.stream.sources.change_capture import ChangeBatch, ChangeCapture, decode_routed
from segstream.stream.sources.debezium import ChangeTopics
from segstream.stream.state.keys import state_key
from segstream.stream.state.populations import count_populations, read_populations
from segstream.stream.state.products import ProductCatalogue
from segstream.stream.state.store import RedisState
from segstream.stream.state.truncations import Truncations
from segstream.training.features import feature_sql
from tests.integration.stream.schema_check import schema_check

PREFIX = "rows:"
TOPICS = ChangeTopics("s.users", "s.orders", "s.items", "s.products", "s.routed")
AT = "2026-01-01T00:00:00.000Z"


class Pipeline:
    """ChangeCapture.prepare then RedisState.apply, on one private loop; routed records are
    kept, for the test to deliver like the internal topic would."""

    def __init__(self, client: aioredis.Redis, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.state = RedisState(client, PREFIX)
        self.source = ChangeCapture(
            TOPICS, "dead", ProductCatalogue(client, PREFIX), Truncations(client, PREFIX)
        )
        self.offsets: dict[str, int] = {}
        self.routed: list[Change] = []

    def source_of(self, topic: str) -> Source:
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        return Source(topic, 0, offset)

    def deliver(self, batch: list[tuple[str, Any]]) -> dict[int, UserState]:
        """One batch of (topic, change), in arrival order."""
        parsed = ChangeBatch({}, [], [], [], [])
        for topic, change in batch:
            source = self.source_of(topic)
            if isinstance(change, ProductRow):
                parsed.products.append((source, change))
            elif isinstance(change, Truncate):
                parsed.truncates.append(change)
            else:
                parsed.by_user.setdefault(change.user_id, []).append((source, change))
        outputs = self.loop.run_until_complete(self.source.prepare(parsed))
        for output in outputs:
            assert output.topic == TOPICS.routed
            self.routed.append(decode_routed(output.value, output.key))
        states = self.loop.run_until_complete(self.state.apply(parsed.by_user))
        for output in self.loop.run_until_complete(self.source.after_apply(parsed)):
            self.routed.append(decode_routed(output.value, output.key))
        return {state.user_id: state for state in states}

    def one(self, topic: str, change: Change | ProductRow) -> dict[int, UserState]:
        return self.deliver([(topic, change)])

    def drain_routed(self) -> dict[int, UserState]:
        states: dict[int, UserState] = {}
        while self.routed:
            pending, self.routed = self.routed, []
            states.update(self.deliver([(TOPICS.routed, change) for change in pending]))
        return states

    def read(self, user_id: int) -> UserState:
        return self.loop.run_until_complete(self.state.apply({user_id: []}))[0]


@pytest.fixture
def pipe(redis_client: redis.Redis, redis_url: str) -> Iterator[Pipeline]:
    loop = asyncio.new_event_loop()
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield Pipeline(client, loop)
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


def profile(user_id: int) -> UserEvent:
    return UserEvent(user_id, 30 + user_id, "F", "Japan", "Search", AT)


def order(order_id: int, user_id: int, present: bool = True) -> OrderRow:
    return OrderRow(order_id, user_id, present, AT)


def item(item_id: int, order_id: int, user_id: int, product: int, present: bool = True) -> ItemRow:
    return ItemRow(item_id, order_id, user_id, product, present, AT)


def product(product_id: int, brand: str, category: str = "Jeans") -> ProductRow:
    return ProductRow(product_id, True, brand, category, AT)


def features(state: UserState) -> tuple[Any, ...]:
    return (state.total_orders, state.most_frequent_brand, state.most_frequent_category)


class TestEachChangeKind:
    def test_a_deleted_line_is_retracted(self, pipe: Pipeline) -> None:
        pipe.one(TOPICS.products, product(1, "Zara"))
        pipe.one(TOPICS.products, product(2, "Alpha"))
        pipe.one(TOPICS.orders, order(10, 7))
        pipe.one(TOPICS.order_items, item(100, 10, 7, 1))
        pipe.one(TOPICS.order_items, item(101, 10, 7, 1))
        state = pipe.one(TOPICS.order_items, item(102, 10, 7, 2))[7]
        assert features(state) == (1, "Zara", "Jeans")
        pipe.one(TOPICS.order_items, item(100, 10, 7, 1, present=False))
        state = pipe.one(TOPICS.order_items, item(101, 10, 7, 1, present=False))[7]
        assert features(state) == (1, "Alpha", "Jeans")
        state = pipe.one(TOPICS.order_items, item(102, 10, 7, 2, present=False))[7]
        assert features(state) == (1, None, None)

    def test_a_line_before_its_order_is_held_until_the_order_arrives(self, pipe: Pipeline) -> None:
        pipe.one(TOPICS.products, product(1, "Zara"))
        state = pipe.one(TOPICS.order_items, item(100, 10, 7, 1))[7]
        assert features(state) == (0, None, None)
        state = pipe.one(TOPICS.orders, order(10, 7))[7]
        assert features(state) == (1, "Zara", "Jeans")

    @pytest.mark.parametrize("batched", [False, True])
    def test_rows_of_a_user_who_left_leave_no_key_once_deleted(
        self, pipe: Pipeline, redis_client: redis.Redis, batched: bool
    ) -> None:
        # Debezium's topics are not ordered with each other: the orders and lines a shop
        # deleted with their user can arrive after the users delete (the leave), their
        # inserts first. The user must end as absent as the SQL has them.
        pipe.one(TOPICS.products, product(1, "Zara"))
        history: list[tuple[str, Change | ProductRow]] = [
            (TOPICS.orders, order(10, 7)),
            (TOPICS.order_items, item(100, 10, 7, 1)),
            (TOPICS.order_items, item(100, 10, 7, 1, present=False)),
            (TOPICS.orders, order(10, 7, present=False)),
        ]
        if batched:
            pipe.deliver(history)
        else:
            for topic, change in history[:2]:
                pipe.one(topic, change)
            assert redis_client.exists(state_key(PREFIX, 7))
            assert self._unassigned(pipe) == 1
            for topic, change in history[2:]:
                pipe.one(topic, change)
        assert list(redis_client.scan_iter(match=f"{PREFIX}{{u:7}}*")) == []
        assert self._unassigned(pipe) == 0
        # A product fix routed to the buyer who left creates nothing either.
        pipe.one(TOPICS.products, product(1, "Alpha"))
        pipe.drain_routed()
        assert list(redis_client.scan_iter(match=f"{PREFIX}{{u:7}}*")) == []

    @staticmethod
    def _unassigned(pipe: Pipeline) -> int:
        client = pipe.state.client
        return pipe.loop.run_until_complete(
            read_populations(client, PREFIX, cluster=False)
        ).unassigned

    @pytest.mark.parametrize("orders_first", [True, False])
    def test_a_moved_order_leaves_one_user_for_the_other_in_either_order(
        self, pipe: Pipeline, orders_first: bool
    ) -> None:
        pipe.one(TOPICS.products, product(1, "Zara"))
        pipe.one(TOPICS.products, product(2, "Alpha"))
        for user, order_id, item_id, product_id in ((1, 10, 100, 1), (2, 20, 200, 2)):
            pipe.one(TOPICS.users, profile(user))
            pipe.one(TOPICS.orders, order(order_id, user))
            pipe.one(TOPICS.order_items, item(item_id, order_id, user, product_id))
        pipe.one(TOPICS.order_items, item(101, 10, 1, 1))
        # Order 10 and its two Zara lines move from user 1 to user 2 (Debezium: a delete
        # under the old key, a create under the new one, per table).
        orders = [(TOPICS.orders, order(10, 1, False)), (TOPICS.orders, order(10, 2))]
        items = [
            (TOPICS.order_items, change)
            for line in (100, 101)
            for change in (item(line, 10, 1, 1, False), item(line, 10, 2, 1))
        ]
        for topic, change in orders + items if orders_first else items + orders:
            pipe.one(topic, change)
        assert features(pipe.read(1)) == (0, None, None)
        assert features(pipe.read(2)) == (2, "Zara", "Jeans")

    def test_a_profile_missing_a_value_is_not_assignable_until_it_is_set(
        self, pipe: Pipeline
    ) -> None:
        pipe.one(TOPICS.products, product(1, "Zara"))
        pipe.one(TOPICS.orders, order(10, 7))
        pipe.one(TOPICS.order_items, item(100, 10, 7, 1))
        assert pipe.one(TOPICS.users, profile(7))[7].assignable
        missing = UserEvent(7, 30, "F", None, "Search", AT)  # type: ignore[arg-type]
        state = pipe.one(TOPICS.users, missing)[7]
        assert (state.country, state.assignable) == (None, False)
        assert pipe.one(TOPICS.users, profile(7))[7].assignable

    def test_redelivery_at_new_offsets_counts_once(self, pipe: Pipeline) -> None:
        pipe.one(TOPICS.products, product(1, "Zara"))
        history: list[tuple[str, Change | ProductRow]] = [
            (TOPICS.orders, order(10, 7)),
            (TOPICS.order_items, item(100, 10, 7, 1)),
            (TOPICS.order_items, item(101, 10, 7, 1)),
            (TOPICS.order_items, item(101, 10, 7, 1, present=False)),
        ]
        first = pipe.deliver(history)[7]
        again = pipe.deliver(history)[7]  # a Connect restart: the same changes, new offsets
        assert features(first) == features(again) == (1, "Zara", "Jeans")
        # Changes of rows already in their final state change nothing at all.
        unchanged = pipe.deliver(history[:2])[7]
        assert unchanged.feature_version == again.feature_version
        assert features(unchanged) == (1, "Zara", "Jeans")

    def test_a_product_correction_reaches_its_buyers_through_their_owners(
        self, pipe: Pipeline
    ) -> None:
        pipe.one(TOPICS.products, product(1, "Zara", "Jeans"))
        pipe.one(TOPICS.products, product(2, "Alpha", "Tops"))
        for user in (1, 2):
            pipe.one(TOPICS.orders, order(user * 10, user))
            pipe.one(TOPICS.order_items, item(user * 100, user * 10, user, 1))
        pipe.one(TOPICS.order_items, item(201, 20, 2, 2))
        assert features(pipe.read(2)) == (1, "Alpha", "Jeans")
        pipe.one(TOPICS.products, product(1, "Zebra", "Tops"))
        assert sorted(c.user_id for c in pipe.routed) == [1, 2]
        assert all(isinstance(c, ProductRefresh) for c in pipe.routed)
        pipe.drain_routed()
        assert features(pipe.read(1)) == (1, "Zebra", "Tops")
        assert features(pipe.read(2)) == (1, "Alpha", "Tops")

    def test_a_line_of_a_product_not_yet_known_counts_once_the_product_arrives(
        self, pipe: Pipeline
    ) -> None:
        pipe.one(TOPICS.orders, order(10, 7))
        state = pipe.one(TOPICS.order_items, item(100, 10, 7, 5))[7]
        assert features(state) == (1, None, None)  # the SQL's inner join: not counted
        pipe.one(TOPICS.products, product(5, "Zara"))
        pipe.drain_routed()
        assert features(pipe.read(7)) == (1, "Zara", "Jeans")


class TestTruncates:
    def test_a_truncate_of_order_items_removes_the_lines_written_before_it(
        self, pipe: Pipeline
    ) -> None:
        pipe.one(TOPICS.products, product(1, "Zara"))
        pipe.one(TOPICS.orders, order(10, 7))
        pipe.one(TOPICS.order_items, ItemRow(100, 10, 7, 1, True, AT, lsn=5))
        pipe.one(TOPICS.order_items, Truncate("order_items", 8, AT))
        pipe.drain_routed()
        assert features(pipe.read(7)) == (1, None, None)
        # A line written before the truncate, read after it (another partition): dropped.
        pipe.one(TOPICS.order_items, ItemRow(101, 10, 7, 1, True, AT, lsn=6))
        assert features(pipe.read(7)) == (1, None, None)
        # One written after it counts.
        state = pipe.one(TOPICS.order_items, ItemRow(102, 10, 7, 1, True, AT, lsn=9))[7]
        assert features(state) == (1, "Zara", "Jeans")

    def test_a_truncate_of_products_uncounts_their_lines_until_they_come_back(
        self, pipe: Pipeline
    ) -> None:
        pipe.one(TOPICS.products, ProductRow(1, True, "Zara", "Jeans", AT, lsn=2))
        pipe.one(TOPICS.orders, order(10, 7))
        pipe.one(TOPICS.order_items, item(100, 10, 7, 1))
        assert features(pipe.read(7)) == (1, "Zara", "Jeans")
        pipe.one(TOPICS.products, Truncate("products", 5, AT))
        pipe.drain_routed()
        assert features(pipe.read(7)) == (1, None, None)
        pipe.one(TOPICS.products, ProductRow(1, True, "Zara", "Tops", AT, lsn=3))  # too old
        pipe.drain_routed()
        assert features(pipe.read(7)) == (1, None, None)
        pipe.one(TOPICS.products, ProductRow(1, True, "Zara", "Tops", AT, lsn=6))
        pipe.drain_routed()
        assert features(pipe.read(7)) == (1, "Zara", "Tops")

    def test_a_truncate_of_orders_holds_their_lines_again(self, pipe: Pipeline) -> None:
        pipe.one(TOPICS.products, product(1, "Zara"))
        pipe.one(TOPICS.orders, OrderRow(10, 7, True, AT, lsn=3))
        pipe.one(TOPICS.order_items, ItemRow(100, 10, 7, 1, True, AT, lsn=4))
        pipe.one(TOPICS.orders, Truncate("orders", 8, AT))
        pipe.drain_routed()
        assert features(pipe.read(7)) == (0, None, None)
        state = pipe.one(TOPICS.orders, OrderRow(10, 7, True, AT, lsn=9))[7]
        assert features(state) == (1, "Zara", "Jeans")


@dataclass
class Shop:
    """The tables, mutated at random; every mutation's change events per table topic."""

    rng: random.Random
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    orders: dict[int, int] = field(default_factory=dict)  # order_id -> user_id
    items: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    """item id -> (order_id, product_id, user_id: its own column, the key of its changes)"""
    products: dict[int, tuple[str, str]] = field(default_factory=dict)
    streams: dict[str, list[Change | ProductRow]] = field(default_factory=dict)
    next_id: int = 1000
    lsn: int = 0

    def emit(self, topic: str, change: Change | ProductRow) -> None:
        self.streams.setdefault(topic, []).append(change)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def set_product(self, product_id: int) -> None:
        # Mostly known values, so that most users end up segmented; sometimes missing.
        brand = self.rng.choice(["Zara", "Alpha", "Levi's", "zara", "Zara", "Alpha", ""])
        category = self.rng.choice(["Jeans", "Tops", "Socks", "Jeans", "Tops", ""])
        self.products[product_id] = (brand, category)
        row = ProductRow(product_id, True, brand, category, AT, self.tick())
        self.emit(TOPICS.products, row)

    def set_profile(self, user: int) -> None:
        self.users[user] = {"age": self.rng.randint(18, 80)}
        self.emit(TOPICS.users, UserEvent(user, self.users[user]["age"], "F", "Japan",
                                         "Search", AT))  # fmt: skip

    def tick(self) -> int:
        """The next log position."""
        self.lsn += 1
        return self.lsn

    def step(self) -> None:
        rng = self.rng
        kind = rng.choices(
            [
                "order",
                "item",
                "delete_item",
                "move",
                "delete_order",
                "product",
                "profile",
                "truncate",
            ],
            weights=[4, 8, 2, 2, 1, 1, 1, 0.3],
        )[0]
        if kind == "profile" or not self.users:
            self.set_profile(rng.randint(1, 6))
        elif kind == "order" or not self.orders:
            order_id, user = self.new_id(), rng.randint(1, 6)
            self.orders[order_id] = user
            self.emit(TOPICS.orders, OrderRow(order_id, user, True, AT, self.tick()))
        elif kind == "item":
            order_id = rng.choice(sorted(self.orders))
            item_id, product_id = self.new_id(), rng.randint(1, 6)
            self.items[item_id] = (order_id, product_id, self.orders[order_id])
            row = ItemRow(item_id, order_id, self.orders[order_id], product_id, True, AT,
                          lsn=self.tick())  # fmt: skip
            self.emit(TOPICS.order_items, row)
        elif kind == "delete_item" and self.items:
            item_id = rng.choice(sorted(self.items))
            order_id, product_id, user = self.items.pop(item_id)
            row = ItemRow(item_id, order_id, user, product_id, False, AT, lsn=self.tick())
            self.emit(TOPICS.order_items, row)
        elif kind == "move":
            order_id = rng.choice(sorted(self.orders))
            old, new = self.orders[order_id], rng.randint(1, 6)
            if old == new:
                return
            self.orders[order_id] = new
            self.emit(TOPICS.orders, OrderRow(order_id, old, False, AT, self.tick()))
            self.emit(TOPICS.orders, OrderRow(order_id, new, True, AT, self.tick()))
            for item_id, (of, product_id, _) in sorted(self.items.items()):
                if of == order_id:
                    self.items[item_id] = (of, product_id, new)
                    for user, present in ((old, False), (new, True)):
                        moved = ItemRow(item_id, of, user, product_id, present, AT, lsn=self.tick())
                        self.emit(TOPICS.order_items, moved)
        elif kind == "delete_order":
            order_id = rng.choice(sorted(self.orders))
            user = self.orders.pop(order_id)
            self.emit(TOPICS.orders, OrderRow(order_id, user, False, AT, self.tick()))
            # Its lines stay (no foreign key here): orphans, counted by neither side.
        elif kind == "truncate":
            table = rng.choice(["orders", "order_items"])
            if table == "orders":
                self.orders.clear()  # their lines stay, held: orphans
                self.emit(TOPICS.orders, Truncate(table, self.tick(), AT))
            else:
                self.items.clear()
                self.emit(TOPICS.order_items, Truncate(table, self.tick(), AT))
        else:
            self.set_product(rng.randint(1, 6))

    def sql_features(self) -> dict[int, tuple[Any, ...]]:
        """features.sql over the current rows: user -> (total_orders, brand, category)."""
        con = duckdb.connect()
        frames = {
            "users": pd.DataFrame(
                [{"id": u, "age": v["age"], "gender": "F", "country": "Japan",
                  "traffic_source": "Search"} for u, v in self.users.items()],
                columns=["id", "age", "gender", "country", "traffic_source"],
            ),
            "orders": pd.DataFrame(
                list(self.orders.items()), columns=["order_id", "user_id"], dtype="int64"
            ),
            "order_items": pd.DataFrame(
                [(i, o, p) for i, (o, p, _) in self.items.items()],
                columns=["id", "order_id", "product_id"], dtype="int64",
            ),
            "products": pd.DataFrame(
                [(p, b, c) for p, (b, c) in self.products.items()],
                columns=["id", "brand", "category"],
            ).astype({"id": "int64", "brand": "object", "category": "object"}),
        }  # fmt: skip
        for name, frame in frames.items():
            con.register(name, frame)
        rows = con.execute(feature_sql("duckdb")).fetchall()
        return {row[0]: (row[5], row[6], row[7]) for row in rows}


class TestUnassigning:
    """A user who loses a feature while staying is unassigned by ``settle.lua`` (the SQL drops
    them): segment gone, populations exact, a change with segment null queued; and assigned
    again, from null, once the feature is back."""

    VERSION = "v1"

    @staticmethod
    def settle(
        pipe: Pipeline, states: dict[int, UserState], segment: int, drift_epoch: int | None = None
    ) -> SettleOutcome:
        """Plan the batch's rows (every assignable user at ``segment``) and run them."""
        listed = list(states.values())
        segments = np.array([segment for state in listed if state.assignable], dtype=np.int64)
        by_user: dict[int, list[tuple[Source, Event]]] = {
            uid: [(Source(TOPICS.orders, 0, uid), UserEvent(uid, 30, "F", "Japan", "Web", AT))]
            for uid in states
        }
        rows = plan_settles(listed, segments, TestUnassigning.VERSION, by_user, drift_epoch)
        return pipe.loop.run_until_complete(pipe.state.settle_outcome(list(rows)))

    @staticmethod
    def populations(pipe: Pipeline) -> tuple[dict[str, dict[int, int]], int]:
        """The maintained counters, checked equal to a count of the user hashes."""
        client = pipe.state.client
        kept = pipe.loop.run_until_complete(read_populations(client, PREFIX, cluster=False))
        counted = pipe.loop.run_until_complete(count_populations(client, PREFIX, cluster=False))
        assert (kept.by_version, kept.unassigned) == (counted.by_version, counted.unassigned)
        return {v: dict(s) for v, s in kept.by_version.items()}, kept.unassigned

    def publish(self, pipe: Pipeline, outcome: SettleOutcome) -> list[Output]:
        """The records of the pending changes; the outboxes cleared as after their send."""
        outputs = outbox_outputs(outcome.pending, "changes", "segments")
        pipe.loop.run_until_complete(pipe.state.clear(outcome.pending))
        return outputs

    @pytest.mark.parametrize("loss", ["order moved away", "branded line deleted"])
    def test_a_user_who_loses_a_feature_is_unassigned_then_assigned_again_from_null(
        self, pipe: Pipeline, redis_client: redis.Redis, loss: str
    ) -> None:
        pipe.one(TOPICS.products, product(1, "Zara"))
        for user, order_id, item_id in ((1, 10, 100), (2, 20, 200)):
            pipe.one(TOPICS.users, profile(user))
            pipe.one(TOPICS.orders, order(order_id, user))
            pipe.one(TOPICS.order_items, item(item_id, order_id, user, 1))
        states = {uid: pipe.read(uid) for uid in (1, 2)}
        first = self.settle(pipe, states, 2, drift_epoch=3)
        assert not first.refused
        self.publish(pipe, first)
        assert self.populations(pipe) == ({self.VERSION: {2: 2}}, 0)
        assert redis_client.hget(state_key(PREFIX, 1), "de") == b"3"

        if loss == "order moved away":
            changes: list[tuple[str, Change | ProductRow]] = [
                (TOPICS.orders, order(10, 1, False)),
                (TOPICS.orders, order(10, 2)),
                (TOPICS.order_items, item(100, 10, 1, 1, False)),
                (TOPICS.order_items, item(100, 10, 2, 1)),
            ]
        else:
            changes = [(TOPICS.order_items, item(100, 10, 1, 1, False))]
        pipe.deliver(changes)
        lost = {uid: pipe.read(uid) for uid in (1, 2)}
        assert not lost[1].assignable and lost[1].segment == 2
        outcome = self.settle(pipe, lost, 2, drift_epoch=3)
        assert not outcome.refused
        (queued,) = outcome.pending[1]
        change = json.loads(queued)
        schema_check("segment_change")(change)
        assert (change["sequence"], change["previous_segment"], change["segment"]) == (2, 2, None)
        assert "drift_epoch" not in change
        # The hash stays (the user still has rows), without segment, version, epoch or time.
        stored = redis_client.hgetall(state_key(PREFIX, 1))
        assert stored and stored[b"cs"] == b"2"
        assert not {b"seg", b"mv", b"de", b"ua"} & set(stored)
        assert self.populations(pipe) == ({self.VERSION: {2: 1}}, 1)
        outputs = self.publish(pipe, outcome)
        assert Output("segments", b"1", None) in outputs  # a tombstone on user-segments

        # The same rows again (a retried call): refused by the compare-and-set, nothing queued.
        again = self.settle(pipe, lost, 2, drift_epoch=3)
        assert 1 in again.refused and 1 not in again.pending
        assert self.populations(pipe) == ({self.VERSION: {2: 1}}, 1)
        # A user who stays unassigned needs no row at all.
        assert self.settle(pipe, {1: pipe.read(1)}, 2).pending == {}

        # The feature back (a new order with a branded line): a change from null.
        pipe.deliver([(TOPICS.orders, order(11, 1)), (TOPICS.order_items, item(110, 11, 1, 1))])
        back = self.settle(pipe, {1: pipe.read(1)}, 4)
        (queued,) = back.pending[1]
        change = json.loads(queued)
        assert (change["sequence"], change["previous_segment"], change["segment"]) == (3, None, 4)
        assert self.populations(pipe) == ({self.VERSION: {2: 1, 4: 1}}, 0)
        assert json.loads(self.publish(pipe, back)[-1].value or b"")["segment"] == 4


def _interleave(rng: random.Random, streams: dict[str, list[Any]]) -> list[tuple[str, Any]]:
    """Every stream's records in its own order, the streams mixed at random."""
    cursors = {topic: 0 for topic, records in streams.items() if records}
    merged: list[tuple[str, Any]] = []
    while cursors:
        topic = rng.choice(sorted(cursors))
        merged.append((topic, streams[topic][cursors[topic]]))
        cursors[topic] += 1
        if cursors[topic] == len(streams[topic]):
            del cursors[topic]
    return merged


@pytest.mark.parametrize("seed", range(6))
def test_state_equals_the_feature_sql_over_the_current_rows(pipe: Pipeline, seed: int) -> None:
    rng = random.Random(seed)
    shop = Shop(rng)
    for product_id in range(1, 5):
        shop.set_product(product_id)
    for user in range(1, 6):  # user 6 has no profile until the mix gives one
        shop.set_profile(user)
    for _ in range(120):
        shop.step()
    merged = _interleave(rng, shop.streams)
    # A Connect restart re-sends a suffix of each table's changes: a random tail again.
    replay = {topic: changes[rng.randint(0, len(changes)) :] for topic, changes in
              shop.streams.items()}  # fmt: skip
    merged += _interleave(rng, replay)
    position = 0
    while position < len(merged):
        size = rng.randint(1, 25)
        pipe.deliver(merged[position : position + size])
        position += size
        if rng.random() < 0.5:
            pipe.drain_routed()
    pipe.drain_routed()
    expected = shop.sql_features()
    assert expected, "the mix left no segmented user: the comparison would prove nothing"
    for user in range(1, 7):
        state = pipe.read(user)
        if user in expected:
            assert state.assignable, (user, features(state), expected[user])
            assert features(state) == expected[user], user
        else:
            assert not state.assignable, (user, features(state))
