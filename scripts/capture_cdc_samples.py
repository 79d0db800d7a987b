"""Record real Debezium change events, one JSON-lines file per kind of change.

Run against a stack started by ``segstream services up --cdc`` after ``segstream generate
--db`` and ``segstream cdc connector --register``: it registers a second connector (topic
prefix ``<prefix>env``, slot ``<slot>_env``) whose values keep the JSON converter's schema
envelope, makes each kind of change in the database, and writes what both connectors
produced to ``OUT/<case>.jsonl`` (without the envelope) and ``OUT/<case>.envelope.jsonl``.
Each line is one Kafka record: ``topic``, ``partition``, ``offset`` and ``key`` / ``value``
as the record's exact bytes decoded as UTF-8 (``null`` for a tombstone's value or a missing
key). The records are Debezium's own output; nothing here writes one by hand.

    python scripts/capture_cdc_samples.py OUT_DIR
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segstream.cdc.connector import TABLES, connector_config, database_password, table_topics
from segstream.services.postgres import PostgresServer
from segstream.settings import Settings, load_settings, load_stack_settings
from segstream.training.postgres_sink import connect

QUIET_S = 3.0
"""A case is over when no new record arrived for this long (after at least one did)."""


def envelope_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "cdc_topic_prefix": f"{settings.cdc_topic_prefix}env",
            "cdc_slot": f"{settings.cdc_slot}_env",
            "cdc_connector_name": f"{settings.cdc_connector_name}-env",
        }
    )


def register(settings: Settings, config: dict[str, str]) -> None:
    request = urllib.request.Request(
        f"{settings.connect_url}/connectors/{settings.cdc_connector_name}/config",
        data=json.dumps(config).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=30).read()


async def capture(
    name: str,
    change: Callable[[], None],
    settings: Settings,
    out: Path,
    wait_for: int = 1,
    from_start: bool = False,
) -> None:
    """Make ``change`` and write the records it caused on both connectors' topics (every
    record since the topics' start when ``from_start``: the snapshot)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    variants = {"": settings, ".envelope": envelope_settings(settings)}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        if from_start:
            change()
        wanted = [t for v in variants.values() for t in table_topics(v).values()]
        deadline = time.monotonic() + 120
        while not set(wanted) <= await consumer.topics():
            if time.monotonic() > deadline:
                raise SystemExit(f"topics {wanted} did not all appear")
            await asyncio.sleep(0.5)
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            described = await admin.describe_topics(wanted)
        finally:
            await admin.close()
        partitions = [
            TopicPartition(topic["topic"], p["partition"])
            for topic in described
            for p in topic["partitions"]
        ]
        consumer.assign(partitions)
        if from_start:
            await consumer.seek_to_beginning(*partitions)
        else:
            for tp, end in (await consumer.end_offsets(partitions)).items():
                consumer.seek(tp, end)
            change()
        got: dict[str, list[dict[str, Any]]] = {suffix: [] for suffix in variants}
        last = time.monotonic()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    suffix = (
                        ".envelope"
                        if r.topic.startswith(variants[".envelope"].cdc_topic_prefix + ".")
                        else ""
                    )
                    got[suffix].append(
                        {
                            "topic": r.topic,
                            "partition": r.partition,
                            "offset": r.offset,
                            "key": None if r.key is None else r.key.decode(),
                            "value": None if r.value is None else r.value.decode(),
                        }
                    )
                    last = time.monotonic()
            if all(len(v) >= wait_for for v in got.values()) and time.monotonic() - last > QUIET_S:
                break
        for suffix, rows in got.items():
            rows.sort(key=lambda row: (row["topic"], row["partition"], row["offset"]))
            path = out / f"{name}{suffix}.jsonl"
            path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            print(f"{len(rows):4} records  {path}")
    finally:
        await consumer.stop()


def main(out: Path) -> None:
    settings = load_settings()
    out.mkdir(parents=True, exist_ok=True)
    pg = PostgresServer(settings, load_stack_settings())
    url = pg.superuser_url()
    env = envelope_settings(settings)
    env_config = connector_config(env, database_password(env))
    env_config["value.converter.schemas.enable"] = "true"

    def sql(*statements: str) -> Callable[[], None]:
        def run() -> None:
            with connect(url) as conn, conn.transaction():
                for statement in statements:
                    conn.execute(statement)

        return run

    cases: list[tuple[str, Callable[[], None], int]] = [
        ("snapshot", lambda: register(env, env_config), len(TABLES)),
        (
            "insert",
            sql(
                "INSERT INTO users (id, first_name, age, gender, country, traffic_source,"
                " created_at)"
                " VALUES (900001, 'Ada', 31, 'F', 'Japan', 'Email', now())",
                "INSERT INTO orders (order_id, user_id, status, gender, created_at, num_of_item)"
                " VALUES (900001, 900001, 'Processing', 'F', now(), 1)",
                "INSERT INTO order_items (id, order_id, user_id, product_id, status, created_at,"
                " sale_price) VALUES (900001, 900001, 900001, 1, 'Processing', now(), 12.5)",
            ),
            3,
        ),
        (
            "insert_line",
            sql(
                "INSERT INTO order_items (id, order_id, user_id, product_id, status, created_at,"
                " sale_price) VALUES (900002, 900001, 900001, 2, 'Processing', now(), 7.25)"
            ),
            1,
        ),
        (
            "update_profile",
            sql(
                "UPDATE users SET age = 32, country = 'Brasil', traffic_source = 'Facebook'"
                " WHERE id = 900001"
            ),
            1,
        ),
        (
            "update_product",
            sql("UPDATE products SET brand = 'Corrected Brand', category = 'Jeans' WHERE id = 2"),
            1,
        ),
        ("delete_line", sql("DELETE FROM order_items WHERE id = 900002"), 2),
        (
            "move_order",
            sql(
                "UPDATE orders SET user_id = 1 WHERE order_id = 900001",
                "UPDATE order_items SET user_id = 1 WHERE order_id = 900001",
            ),
            6,
        ),
        (
            "delete_user",
            sql(
                "DELETE FROM order_items WHERE user_id = 2",
                "DELETE FROM orders WHERE user_id = 2",
                "DELETE FROM users WHERE id = 2",
            ),
            2,
        ),
        ("truncate", sql("TRUNCATE order_items"), 1),
    ]
    for name, change, wait_for in cases:
        asyncio.run(capture(name, change, settings, out, wait_for, name == "snapshot"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
