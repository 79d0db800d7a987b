"""``segstream replay``: a dataset's users and orders, published as the stream's input events.

The demo's and the tests' source. Reads thelook tables (a ``--data DIR`` or a ``--db URL``,
through :func:`segstream.training.data.run_query`) and publishes, in ``created_at`` order
(a profile before an order of the same instant), one ``users`` event per users row and one
``orders`` event per distinct orders row, its items joined from ``order_items`` and
``products`` (an item whose product is unknown is sent with a null brand and category, which
the stream does not count, like the SQL). Events follow ``schemas/users.json`` and
``schemas/orders.json``; the key is the user_id as a UTF-8 decimal string, so Kafka's default
partitioner sends a user's profile and orders to the same partition number of both topics.

An order without any item cannot be sent (the schema, like the SQL's intent, wants items) and
is skipped and counted. The message timestamp is the send time, not ``created_at``: historical
timestamps would fall outside the topic's retention and be deleted at once.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from segstream.errors import ServiceError
from segstream.settings import Settings
from segstream.stream.clients.kafka import producer as kafka_producer
from segstream.stream.domain.events import user_key
from segstream.training.data import DataSource, run_query

__all__ = ["ReplayEvent", "ReplayPlan", "build_events", "publish_events", "read_replay_plan"]

USERS_SQL = "SELECT id, age, gender, country, traffic_source, created_at FROM users"
ORDERS_SQL = "SELECT DISTINCT order_id, user_id, status, created_at FROM orders"
ITEMS_SQL = """
SELECT oi.order_id, oi.product_id, p.brand, p.category, oi.sale_price
FROM order_items AS oi
LEFT JOIN products AS p ON p.id = oi.product_id
ORDER BY oi.order_id, oi.id
"""


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """One input event to publish: ``kind`` is "users" or "orders"."""

    kind: str
    user_id: int
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """The events of a dataset in publication order, and what could not be sent."""

    events: list[ReplayEvent]
    orders_without_items: int


def _rfc3339(values: pd.Series) -> list[str | None]:
    """Timestamps -> RFC 3339 UTC strings with microseconds ("2023-01-02T03:04:05.000006Z")."""
    stamps = pd.to_datetime(values, utc=True)
    text = stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return [None if pd.isna(t) else t for t in text]


def _none_if_na(value: object) -> object:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _dump(document: dict[str, object]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def build_events(users: pd.DataFrame, orders: pd.DataFrame, items: pd.DataFrame) -> ReplayPlan:
    """The replay events of three frames (pure).

    Args:
        users: id, age, gender, country, traffic_source, created_at.
        orders: order_id, user_id, status, created_at (one row per event to send).
        items: order_id, product_id, brand, category, sale_price (in the items' order).
    """
    items_by_order: dict[int, list[dict[str, object]]] = {}
    for order_id, product_id, brand, category, price in zip(
        items["order_id"].tolist(),
        items["product_id"].tolist(),
        items["brand"].tolist(),
        items["category"].tolist(),
        items["sale_price"].tolist(),
        strict=True,
    ):
        price = _none_if_na(price)
        items_by_order.setdefault(int(order_id), []).append(
            {
                "product_id": int(product_id),
                "brand": _none_if_na(brand),
                "category": _none_if_na(category),
                "sale_price": 0.0 if price is None else float(price),  # type: ignore[arg-type]
            }
        )

    stamped: list[tuple[str, int, int, ReplayEvent]] = []
    for uid, age, gender, country, source, created in zip(
        users["id"].tolist(),
        users["age"].tolist(),
        users["gender"].tolist(),
        users["country"].tolist(),
        users["traffic_source"].tolist(),
        _rfc3339(users["created_at"]),
        strict=True,
    ):
        age = _none_if_na(age)
        document = {
            "user_id": int(uid),
            "age": None if age is None else int(age),  # type: ignore[call-overload]
            "gender": _none_if_na(gender),
            "country": _none_if_na(country),
            "traffic_source": _none_if_na(source),
            "created_at": created,
        }
        event = ReplayEvent("users", int(uid), user_key(int(uid)), _dump(document))
        stamped.append((created or "", 0, int(uid), event))

    skipped = 0
    for order_id, uid, status, created in zip(
        orders["order_id"].tolist(),
        orders["user_id"].tolist(),
        orders["status"].tolist(),
        _rfc3339(orders["created_at"]),
        strict=True,
    ):
        order_items = items_by_order.get(int(order_id))
        if not order_items:
            skipped += 1
            continue
        document = {
            "order_id": int(order_id),
            "user_id": int(uid),
            "status": _none_if_na(status),
            "created_at": created,
            "items": order_items,
        }
        event = ReplayEvent("orders", int(uid), user_key(int(uid)), _dump(document))
        stamped.append((created or "", 1, int(order_id), event))

    # RFC 3339 UTC strings of one fixed format sort as the instants they name.
    stamped.sort(key=lambda entry: entry[:3])
    return ReplayPlan([entry[3] for entry in stamped], skipped)


def read_replay_plan(source: DataSource, limit: int | None = None) -> ReplayPlan:
    """The replay events of the dataset at ``source``; the first ``limit`` if given.

    Raises:
        DataError: a table or column is missing, or a query fails.
        ServiceError: the database cannot be reached.
    """
    users = run_query(source, USERS_SQL)
    orders = run_query(source, ORDERS_SQL)
    items = run_query(source, ITEMS_SQL)
    plan = build_events(users, orders, items)
    if limit is not None:
        return ReplayPlan(plan.events[:limit], plan.orders_without_items)
    return plan


async def publish_events(
    events: Sequence[ReplayEvent],
    *,
    settings: Settings,
    topics: dict[str, str],
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    acknowledged: Callable[[ReplayEvent, RecordMetadata], None] | None = None,
) -> float:
    """Publish ``events`` in order with an idempotent producer; returns the seconds it took.

    Args:
        topics: event kind ("users", "orders") -> topic name.
        rate: at most this many events a second (evenly paced); ``None`` is as fast as possible.
        progress: called with the number of events just sent, now and then.
        acknowledged: called with each event and its record's metadata (partition, offset,
            timestamp) once the broker acknowledged it, in publication order.

    While a paced publication runs, the garbage collector is paused (and restored after): the
    caller holds a whole dataset, and a full collection of it (120-250 ms measured at 100,000
    users) stamped records with their CreateTime and then held them back, a pause that the
    stream bench counted as the worker's latency and a paced load should not have.

    Raises:
        ServiceError: the broker cannot be reached or refuses the records.
    """
    collecting = gc.isenabled()
    if rate is not None:
        gc.disable()
    try:
        return await _publish(events, settings, topics, rate, progress, acknowledged)
    finally:
        if collecting:
            gc.enable()


async def _publish(
    events: Sequence[ReplayEvent],
    settings: Settings,
    topics: dict[str, str],
    rate: float | None,
    progress: Callable[[int], None] | None,
    acknowledged: Callable[[ReplayEvent, RecordMetadata], None] | None,
) -> float:
    bootstrap = settings.kafka_bootstrap_servers
    producer = kafka_producer(
        settings,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    try:
        await producer.start()
    except (TimeoutError, KafkaError, OSError) as exc:
        await producer.stop()  # releases what start() opened before it failed
        raise ServiceError(f"cannot reach the broker at {bootstrap}: {exc!r}") from exc
    start = time.perf_counter()
    try:
        futures: list[asyncio.Future[RecordMetadata]] = []
        waiting: list[ReplayEvent] = []

        async def settle() -> None:
            results = await asyncio.gather(*futures)
            if acknowledged is not None:
                for event, metadata in zip(waiting, results, strict=True):
                    acknowledged(event, metadata)
            futures.clear()
            waiting.clear()

        # Paced in slices of ~5 ms: small enough that the stream sees a steady flow, not
        # bursts (a 50 ms pace would beat in phase with the worker's 50 ms batch window).
        step = 1_000 if rate is None else max(1, min(1_000, int(rate // 200) or 1))
        for index in range(0, len(events), step):
            chunk = events[index : index + step]
            for event in chunk:
                futures.append(await producer.send(topics[event.kind], event.value, key=event.key))
            waiting += chunk
            if rate is not None:
                ahead = (index + len(chunk)) / rate - (time.perf_counter() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if len(futures) >= 10_000:
                await settle()
            if progress is not None:
                progress(len(chunk))
        await settle()
        await producer.flush()
    except (TimeoutError, KafkaError, OSError) as exc:
        raise ServiceError(f"publishing to {bootstrap} failed: {exc!r}") from exc
    finally:
        await producer.stop()
    return time.perf_counter() - start
