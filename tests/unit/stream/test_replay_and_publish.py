"""Replay event building and publishing's retry order, without servers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any

import pandas as pd
import pytest
from aiokafka.errors import KafkaTimeoutError

from segstream.stream.changes import Output
from segstream.stream.events import parse_order, parse_user
from segstream.stream.publisher import publish
from segstream.stream.replay import build_events
from segstream.stream.state import describe_user


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


class _FlakySender:
    """Acknowledges everything except the listed sends (by send number), which time out."""

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing
        self.sent: list[bytes | None] = []

    async def send(self, output: Output) -> Awaitable[Any]:
        number = len(self.sent)
        self.sent.append(output.value)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if number in self.failing:
            future.set_exception(KafkaTimeoutError())
        else:
            future.set_result(number)
        return future


def test_publish_resends_from_the_first_failure_on_in_order() -> None:
    sender = _FlakySender(failing={1})
    outputs = [Output("t", b"k", bytes([n])) for n in range(4)]
    asyncio.run(publish(sender, outputs, first_delay_s=0.001))
    assert sender.sent == [b"\x00", b"\x01", b"\x02", b"\x03", b"\x01", b"\x02", b"\x03"]


def test_publish_lets_a_non_broker_error_through() -> None:
    class Broken(_FlakySender):
        async def send(self, output: Output) -> Awaitable[Any]:
            raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        asyncio.run(publish(Broken(set()), [Output("t", b"k", b"v")]))


def test_describe_user_lists_counts_orders_fences_and_pending_changes() -> None:
    fields = {
        b"age": b"30", b"gen": b"F", b"cty": b"Japan", b"src": b"Search", b"n": b"2",
        b"tb": b"Zo\xc3\xab", b"tc": b"Jeans", b"seg": b"1", b"mv": b"v1", b"cs": b"2",
        b"ua": b"2024-01-01T00:00:00Z", b"o:12": b"1", b"o:3": b"1", b"b:Zo\xc3\xab": b"2",
        b"b:Alpha": b"2", b"c:Jeans": b"3", b"f:orders:1": b"77",
    }  # fmt: skip
    described = describe_user(5, fields, [json.dumps({"event_id": "e"}).encode()])
    assert described["orders"] == [3, 12]
    assert described["brand_counts"] == {"Alpha": 2, "Zoë": 2}
    assert described["fences"] == {"orders:1": 77}
    assert (described["segment"], described["changes"], described["assignable"]) == (1, 2, True)
    assert described["pending"] == [{"event_id": "e"}]
