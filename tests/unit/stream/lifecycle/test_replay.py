"""Replay: events built from a dataset in time order, and a failed paced publication."""

from __future__ import annotations

import asyncio
import gc

import pandas as pd
import pytest

from segstream.errors import ServiceError
from segstream.settings import Settings
from segstream.stream.domain.events import parse_order, parse_user
from segstream.stream.lifecycle.replay import ReplayEvent, build_events, publish_events
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
