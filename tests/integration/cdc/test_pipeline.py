"""The real pipeline: PostgreSQL -> Debezium on Kafka Connect -> the four change topics.

A generated database is snapshotted, then the shop's live mix runs; replaying the topics'
change events must give exactly the database's current rows, with every user's changes keyed
``{"user_id": N}`` on one partition number across the users, orders and order_items topics.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest

from segstream.cdc.connect_api import register
from segstream.cdc.connector import (
    TABLES,
    USER_KEYED_TABLES,
    connector_config,
    database_password,
)
from segstream.cdc.fit import fit_problems
from segstream.cdc.shop import MIX, Shop
from segstream.errors import ServiceError
from segstream.training.postgres_sink import PRIMARY_KEYS, connect
from tests.integration.cdc.pipeline import Capture, Record, captured_shop, read_all
from tests.integration.stacks import CdcServices
from tests.waiting import wait_until

COLUMNS = {
    "users": ("id", "age", "country", "traffic_source"),
    "orders": ("order_id", "user_id"),
    "order_items": ("id", "order_id", "user_id", "product_id"),
    "products": ("id", "brand", "category"),
}
"""The columns compared between the database and the replayed change events."""


def _current_rows(capture: Capture) -> dict[str, set[tuple[Any, ...]]]:
    with connect(capture.owner_url) as conn:
        return {
            table: set(conn.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall())
            for table, cols in COLUMNS.items()
        }


def _replayed(records: list[Record], topics: dict[str, str]) -> dict[str, set[tuple[Any, ...]]]:
    """The rows the change events leave, applied in the database's commit (LSN) order.

    A key change (an order moved) is a delete and a create with one LSN on two partitions;
    the delete goes first, as Debezium emits it.
    """
    table_of = {topic: table for table, topic in topics.items()}
    events = [(table_of[r.topic], r.event()) for r in records if r.value is not None]
    events.sort(key=lambda e: (e[1]["source"]["lsn"], e[1]["op"] != "d"))
    rows: dict[str, dict[int, dict[str, Any]]] = {table: {} for table in TABLES}
    for table, event in events:
        key = PRIMARY_KEYS[table]
        if event["op"] in ("r", "c", "u"):
            rows[table][event["after"][key]] = event["after"]
        elif event["op"] == "d":
            rows[table].pop(event["before"][key], None)
        elif event["op"] == "t":
            rows[table].clear()
    return {
        table: {tuple(row[c] for c in COLUMNS[table]) for row in found.values()}
        for table, found in rows.items()
    }


def _wait_for_replay(capture: Capture, timeout_s: float = 180.0) -> list[Record]:
    """Poll the topics until their events replay to the database's rows; the records."""
    topics = capture.topics
    expected = _current_rows(capture)
    seen: list[tuple[list[Record], Any]] = []

    def replayed() -> bool:
        records = read_all(capture.settings, list(topics.values()))
        seen.append((records, _replayed(records, topics)))
        return bool(seen[-1][1] == expected)

    def differ() -> str:
        tables = [t for t in TABLES if seen[-1][1][t] != expected[t]]
        return f"the change topics never matched the database; tables {tables} differ"

    wait_until(replayed, timeout_s, differ, interval_s=0.5)
    return seen[-1][0]


def _user_of(table: str, record: Record) -> int:
    event = record.event()
    if event is None:  # a tombstone: its key is the deleted row's
        return int(json.loads(record.key or b"{}")["user_id"])
    row = event["after"] or event["before"]
    return int(row["id"] if table == "users" else row["user_id"])


def test_snapshot_then_live_changes_arrive_keyed_by_user_and_co_partitioned(
    cdc: CdcServices,
) -> None:
    with captured_shop(cdc, users=30, products=20, seed=5) as capture:
        snapshot = _wait_for_replay(capture)
        assert {r.event()["op"] for r in snapshot if r.value is not None} == {"r"}

        with connect(capture.owner_url, autocommit=True) as conn:
            shop = Shop(conn, seed=5, schema=capture.settings.cdc_schema)
            shop.run(rate=200, steps=40)
            for kind in MIX:  # every kind at least once, whatever the seed drew
                shop.make(kind)
        records = _wait_for_replay(capture)

        topics = capture.topics
        table_of = {topic: table for table, topic in topics.items()}
        ops = {r.event()["op"] for r in records if r.value is not None}
        assert {"r", "c", "u", "d"} <= ops
        assert any(r.value is None for r in records), "deletes are followed by tombstones"

        partitions_of_user: dict[int, set[int]] = defaultdict(set)
        for record in records:
            table = table_of[record.topic]
            if table in USER_KEYED_TABLES:
                user = _user_of(table, record)
                assert record.key == json.dumps({"user_id": user}, separators=(",", ":")).encode()
                partitions_of_user[user].add(record.partition)
            else:
                product = (record.event() or {}).get("after") or {}
                if product:
                    assert record.key == f'{{"id":{product["id"]}}}'.encode()
        spread = {user: p for user, p in partitions_of_user.items() if len(p) > 1}
        assert spread == {}, "a user's changes landed on different partition numbers"
        assert len({table_of[r.topic] for r in records}) == len(TABLES)
        assert fit_problems(capture.settings) == []


def test_check_names_a_table_without_replica_identity_full(cdc: CdcServices) -> None:
    with captured_shop(cdc, users=5, products=5, seed=1) as capture:
        _wait_for_replay(capture)
        with connect(capture.owner_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE order_items REPLICA IDENTITY DEFAULT")
        problems = fit_problems(capture.settings)
        assert len(problems) == 1
        assert "order_items has REPLICA IDENTITY DEFAULT" in problems[0]
        assert "REPLICA IDENTITY FULL" in problems[0]


def test_registering_is_idempotent_and_a_refused_config_names_the_setting(
    cdc: CdcServices,
) -> None:
    with captured_shop(cdc, users=5, products=5, seed=2) as capture:
        settings = capture.settings
        config = connector_config(settings, database_password(settings))
        assert register(settings, config) is False
        bad = {**config, "snapshot.mode": "sometimes"}
        with pytest.raises(ServiceError, match=r"snapshot\.mode"):
            register(settings, bad)


def test_a_connect_that_is_down_is_named_with_its_setting(cdc: CdcServices) -> None:
    from tests.ports import free_port

    settings = cdc.settings.model_copy(update={"connect_url": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(ServiceError, match="SEGSTREAM_CONNECT_URL"):
        register(settings, connector_config(settings, "x"))
