"""A real worker with ``SEGSTREAM_SOURCE=cdc`` on the real Kafka and Redis, fed the recorded
output of the real Debezium connector (``tests/unit/stream/sources/samples/``): its state for
every user equals ``features.sql`` over the rows those changes leave, unusable events are
dead letters, and a product correction reaches its buyer through the internal topic."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from segstream.settings import Settings
from segstream.stream.kafka.lag import read_lag
from segstream.stream.state.keys import state_prefix
from segstream.stream.state.store import RedisState
from segstream.training.artifact import publish_current, save_model
from segstream.training.features import feature_sql
from tests.integration.stream.conftest import app_settings
from tests.small_model import make_model
from tests.waiting import wait_until

SAMPLES = Path(__file__).resolve().parents[2] / "unit" / "stream" / "sources" / "samples"
CASES = ("snapshot", "insert", "insert_line", "update_profile", "update_product",
         "delete_line", "move_order", "delete_user", "truncate")  # fmt: skip
"""The recorded cases, in the order they were made."""
PRIMARY_KEYS = {"users": "id", "orders": "order_id", "order_items": "id", "products": "id"}


def recorded() -> list[dict[str, Any]]:
    records = []
    for case in CASES:
        for line in (SAMPLES / f"{case}.jsonl").read_text().splitlines():
            records.append(json.loads(line))
    return records


def current_rows(records: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """What the tables hold after the changes: each row by primary key (the batch's input)."""
    tables: dict[str, dict[int, dict[str, Any]]] = {table: {} for table in PRIMARY_KEYS}
    for record in records:
        if record["value"] is None:
            continue
        event = json.loads(record["value"])
        table = event["source"]["table"]
        rows, key = tables[table], PRIMARY_KEYS[table]
        lsn = event["source"]["lsn"]
        if event["op"] == "t":  # the rows written before it go
            tables[table] = {k: row for k, row in rows.items() if row["_lsn"] > lsn}
            continue
        if event["op"] == "d":
            # A moved row's delete (old key) may be read after its create (new key): it
            # removes the old version only.
            gone = event["before"]
            if gone[key] in rows and rows[gone[key]].get("user_id") == gone.get("user_id"):
                rows.pop(gone[key])
        else:
            rows[event["after"][key]] = {**event["after"], "_lsn": lsn}
    return tables


def sql_features(tables: dict[str, dict[int, dict[str, Any]]]) -> dict[int, tuple[Any, ...]]:
    con = duckdb.connect()
    columns = {
        "users": ["id", "age", "gender", "country", "traffic_source"],
        "orders": ["order_id", "user_id"],
        "order_items": ["id", "order_id", "user_id", "product_id"],
        "products": ["id", "brand", "category"],
    }
    for table, names in columns.items():
        frame = pd.DataFrame([[row[n] for n in names] for row in tables[table].values()],
                             columns=names)  # fmt: skip
        con.register(table, frame)
    # Every user with a row anywhere, segmented or not, from features.sql's own CTEs (its
    # user_features needs a users row; a moved order's new user may not have one here).
    head = feature_sql("duckdb").split("-- final SELECT")[0]
    query = (
        head
        + """
        SELECT ids.user_id, u.age, u.gender, u.country, u.traffic_source, oc.total_orders,
               br.brand, cr.category
        FROM (SELECT id AS user_id FROM users UNION SELECT user_id FROM orders
              UNION SELECT user_id FROM order_items) AS ids
        LEFT JOIN users AS u ON u.id = ids.user_id
        LEFT JOIN order_counts AS oc ON oc.user_id = ids.user_id
        LEFT JOIN brand_ranks AS br ON br.user_id = ids.user_id AND br.position = 1
        LEFT JOIN category_ranks AS cr ON cr.user_id = ids.user_id AND cr.position = 1
    """
    )
    return {row[0]: tuple(row[1:]) for row in con.execute(query).fetchall()}


async def _produce(settings: Settings, records: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for record in records:
            topic = record["topic"].replace("shop.", f"{settings.cdc_topic_prefix}.", 1)
            key = record["key"].encode() if record["key"] is not None else None
            value = record["value"].encode() if record["value"] is not None else None
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _dead_letters(settings: Settings) -> int:
    """Records on the dead-letter topic (the worker has consumed everything by now)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(settings.topic_dead_letters)
        if not partitions:
            await consumer.topics()
            partitions = consumer.partitions_for_topic(settings.topic_dead_letters) or set()
        ends = await consumer.end_offsets(
            [TopicPartition(settings.topic_dead_letters, p) for p in partitions]
        )
        return sum(ends.values())
    finally:
        await consumer.stop()


async def _keys_of(settings: Settings, users: set[int]) -> int:
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        prefix = state_prefix(settings)
        return int(await client.exists(*(f"{prefix}{{u:{user}}}" for user in users)))
    finally:
        await client.aclose()


async def _states(settings: Settings, users: list[int]) -> dict[int, Any]:
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        state = RedisState(client, state_prefix(settings))
        return {s.user_id: s for s in await state.apply({user: [] for user in users})}
    finally:
        await client.aclose()


def wait_caught_up(settings: Settings, worker: Any, topics: list[str]) -> None:
    """Poll until the worker's group has no lag on ``topics``; fail at once if it died."""
    lags: list[int] = []

    def caught_up() -> bool:
        assert worker.process.poll() is None, worker.log_tail()
        lags.append(asyncio.run(read_lag(settings, settings.app_id, topics, attempts=30)).total_lag)
        return lags[-1] == 0

    wait_until(caught_up, 180, lambda: f"{lags[-1]} behind:\n{worker.log_tail()}", interval_s=0.5)


def wait_features(settings: Settings, worker: Any, expected: dict[int, Any]) -> None:
    """Poll until the stored features of ``expected``'s users are the SQL's ``expected``
    (a correction's re-derivation lands a moment after the lag is 0)."""
    found: list[dict[int, Any]] = []

    def landed() -> bool:
        states = asyncio.run(_states(settings, sorted(expected)))
        found.append({
            user: (s.age, s.gender, s.country, s.traffic_source, s.total_orders or None,
                   s.most_frequent_brand, s.most_frequent_category)
            for user, s in states.items()
        })  # fmt: skip
        return found[-1] == expected

    wait_until(
        landed,
        60,
        lambda: f"stored {found[-1]}\n!= the SQL's {expected}\n{worker.log_tail()}",
        interval_s=0.5,
    )


def test_a_cdc_worker_keeps_the_features_of_the_current_rows(
    kafka_bootstrap: str, redis_url: str, make_topic: Any, start_worker: Any, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    save_model(make_model("v1"), models / "v1")
    publish_current(models, models / "v1")
    settings = app_settings(
        kafka_bootstrap,
        redis_url,
        model_dir=models,
        data_dir=tmp_path / "worker-data",
        source="cdc",
        log_level="info",
    )
    tag = settings.app_id
    settings = settings.model_copy(
        update={"cdc_topic_prefix": f"shop{tag}", "topic_rederive": f"rederive-{tag}"}
    )
    for table in PRIMARY_KEYS:  # as the connector makes them: the worker's partition count
        make_topic(f"shop{tag}.public.{table}", partitions=4)
    # The internal topic is the worker's to make (with SEGSTREAM_TOPIC_PARTITIONS).
    records = recorded()
    asyncio.run(_produce(settings, records))
    worker = start_worker(settings)
    topics = [f"shop{tag}.public.{table}" for table in PRIMARY_KEYS]
    wait_caught_up(settings, worker, topics)

    assert asyncio.run(_dead_letters(settings)) == 0
    tables = current_rows(records)
    expected = sql_features(tables)
    # The recorded mix: a profile edit, a line added and one deleted, an order moved to user
    # 1 with its line, a product corrected, order_items truncated.
    assert any(orders for *_, orders, _, _ in expected.values()), "no orders: nothing compared"
    # The correction's re-derivation goes through the internal topic: poll until it landed.
    wait_features(settings, worker, expected)
    # The deleted user left: no key of theirs is left.
    deleted = {
        json.loads(r["value"])["before"]["id"]
        for r in records
        if r["value"] and r["topic"].endswith(".users") and '"op":"d"' in r["value"]
    }
    assert deleted and not deleted & set(expected)
    assert asyncio.run(_keys_of(settings, deleted)) == 0, worker.log_tail()
