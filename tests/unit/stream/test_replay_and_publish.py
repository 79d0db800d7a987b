"""Replay event building, output partitioning and user descriptions, without servers."""

from __future__ import annotations

import asyncio
import gc
import json

import pandas as pd
import pytest
from aiokafka.partitioner import DefaultPartitioner

from segstream.errors import ServiceError
from segstream.settings import Settings
from segstream.stream.domain.events import parse_order, parse_user
from segstream.stream.domain.topics import Output
from segstream.stream.kafka.publisher import default_partition, group_by_partition
from segstream.stream.lifecycle.replay import ReplayEvent, build_events, publish_events
from segstream.stream.state.codec import describe_user
from tests.ports import free_port


def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_replay_interleaves_profiles_and_orders_by_time_and_joins_items() -> None:
    users = pd.DataFrame(
        {"id": [1, 2], "age": [30, 40], "gender": ["F", "M"], "country": ["Japan", "Spain"],
         "traffic_source": ["Search", "Email"],
         "created_at": [_ts("2020-01-01"), _ts("2020-03-01")]}
    )  # fmt: skip
    orders = pd.DataFrame(
        {"order_id": [10, 11, 12], "user_id": [1, 2, 1], "status": ["Shipped"] * 3,
         "created_at": [_ts("2020-02-01"), _ts("2020-03-01"), _ts("2020-04-01 12:00:00.000001")]}
    )  # fmt: skip
    items = pd.DataFrame(
        {"order_id": [10, 10, 11], "product_id": [5, 6, 7], "brand": ["A", None, "C"],
         "category": ["X", "Y", None], "sale_price": [1.5, float("nan"), 3.0]}
    )  # fmt: skip
    plan = build_events(users, orders, items)
    assert plan.orders_without_items == 1  # order 12
    assert [(e.kind, e.user_id) for e in plan.events] == [
        ("users", 1),
        ("orders", 1),
        ("users", 2),  # a profile goes before an order of the same instant
        ("orders", 2),
    ]
    first_order = parse_order(plan.events[1].value, plan.events[1].key)
    assert [(i.brand, i.category, i.sale_price) for i in first_order.items] == [
        ("A", "X", 1.5),
        (None, "Y", 0.0),
    ]
    profile = parse_user(plan.events[0].value, plan.events[0].key)
    assert profile.created_at == "2020-01-01T00:00:00.000000Z"


def test_records_go_to_kafkas_default_partition_in_order() -> None:
    keys = [str(uid).encode() for uid in range(200)]
    outputs = [Output("t", key, bytes([i % 256])) for i, key in enumerate(keys)]
    outputs += [Output("u", keys[0], b"later")]
    groups = group_by_partition(outputs, {"t": 4, "u": 3}.__getitem__)
    for (topic, partition), group in groups.items():
        for output in group:
            expected = DefaultPartitioner()(output.key, list(range(4 if topic == "t" else 3)), [])
            assert partition == expected
        assert group == [o for o in outputs if o in group]  # original order kept
    assert sum(len(g) for g in groups.values()) == len(outputs)
    assert default_partition(None, 4, fallback=6) == 2


def test_describe_user_lists_counts_orders_fences_and_pending_changes() -> None:
    fields = {
        b"age": b"30", b"gen": b"F", b"cty": b"Japan", b"src": b"Search", b"n": b"2",
        b"tb": b"Zo\xc3\xab", b"tc": b"Jeans", b"seg": b"1", b"mv": b"v1", b"cs": b"2",
        b"fv": b"4", b"ua": b"2024-01-01T00:00:00Z", b"o:12": b"1", b"o:3": b"1",
        b"b:Zo\xc3\xab": b"2", b"b:Alpha": b"2", b"c:Jeans": b"3", b"f:orders:1": b"77",
    }  # fmt: skip
    described = describe_user(5, fields, [json.dumps({"event_id": "e"}).encode()])
    assert described["orders"] == [3, 12]
    assert described["brand_counts"] == {"Alpha": 2, "Zoë": 2}
    assert described["fences"] == {"orders:1": 77}
    assert (described["segment"], described["changes"], described["assignable"]) == (1, 2, True)
    assert described["feature_version"] == 4
    assert described["pending"] == [{"event_id": "e"}]


def test_a_paced_publication_that_fails_leaves_the_garbage_collector_enabled() -> None:
    event = ReplayEvent("users", 1, b"1", b"{}")
    with pytest.raises(ServiceError):
        asyncio.run(
            publish_events(
                [event],
                settings=Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}"),
                topics={"users": "u"},
                rate=10.0,
            )
        )
    assert gc.isenabled()
