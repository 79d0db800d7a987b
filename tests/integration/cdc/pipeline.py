"""A captured shop database for tests: a fresh PostgreSQL database of generated thelook
tables, its publication, and a Debezium connector of its own on the session's Connect.

Each capture has its own database, topic prefix, publication, slot and connector name, so
tests never see each other's changes; ``close`` deletes the connector and drops its slot.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from segstream.cdc.connect_api import connector_state, register
from segstream.cdc.connector import connector_config, database_password, table_topics
from segstream.cdc.database import prepare_capture
from segstream.services.credentials import password
from segstream.services.postgres import CDC_ROLE, SUPERUSER
from segstream.settings import Settings
from segstream.training.generate import generate_catalogue, generate_tables
from segstream.training.postgres_sink import connect, write_database
from tests.integration.stacks import CdcServices
from tests.waiting import wait_until


@dataclass(frozen=True)
class Capture:
    """One captured database: ``settings`` name its topics, connector and database;
    ``owner_url`` is the tables' owner's URL (for changes and for reading current rows)."""

    settings: Settings
    owner_url: str

    @property
    def topics(self) -> dict[str, str]:
        return table_topics(self.settings)


@contextmanager
def captured_shop(
    cdc: CdcServices, *, users: int = 30, products: int = 20, seed: int = 0
) -> Iterator[Capture]:
    """A generated database of ``users`` users under a running connector (snapshot started)."""
    name = f"shop_{uuid.uuid4().hex[:8]}"
    port = cdc.postgres.stack.postgres_port
    secret = password(cdc.postgres.settings, "postgres")
    admin_url = f"postgresql://{SUPERUSER}:{secret}@127.0.0.1:{port}/postgres"
    with connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    owner_url = f"postgresql://{SUPERUSER}:{secret}@127.0.0.1:{port}/{name}"
    settings = cdc.settings.model_copy(
        update={
            "cdc_database_url": f"postgresql://{CDC_ROLE}@127.0.0.1:{port}/{name}",
            "cdc_topic_prefix": name,
            "cdc_publication": name,
            "cdc_slot": name,
            "cdc_connector_name": name,
        }
    )
    tables = generate_tables(users, seed, generate_catalogue(seed, products))
    write_database(tables, owner_url, settings.cdc_schema)
    with connect(owner_url, autocommit=True) as conn:
        prepare_capture(conn, settings, CDC_ROLE)
    register(settings, connector_config(settings, database_password(settings)))
    state = connector_state(settings, wait_s=120)
    assert state is not None and state.running, state
    try:
        yield Capture(settings, owner_url)
    finally:
        _close(settings, admin_url)


def _close(settings: Settings, admin_url: str) -> None:
    import urllib.request

    request = urllib.request.Request(
        f"{settings.connect_url}/connectors/{settings.cdc_connector_name}", method="DELETE"
    )
    urllib.request.urlopen(request, timeout=30).read()
    with connect(admin_url, autocommit=True) as conn:

        def dropped() -> bool:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                (settings.cdc_slot,),
            ).fetchone()
            if row is not None and not row[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (settings.cdc_slot,))
            return row is None or not row[0]

        # The slot stays active until Connect's task has let go of it; a slot left behind
        # would hold the database's WAL for good, so one still held after this is a failure.
        still = f"replication slot {settings.cdc_slot} still active"
        wait_until(dropped, 30, still, interval_s=0.1)


@dataclass(frozen=True)
class Record:
    """One change record as Kafka holds it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def event(self) -> dict[str, Any] | None:
        """The Debezium change event (None for a tombstone)."""
        return None if self.value is None else json.loads(self.value)


def read_all(settings: Settings, topics: list[str], timeout_s: float = 90.0) -> list[Record]:
    """Every record on ``topics`` up to their current ends, in offset order per partition."""
    return asyncio.run(_read_all(settings, topics, timeout_s))


async def _read_all(settings: Settings, topics: list[str], timeout_s: float) -> list[Record]:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    partitions = [
        TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]
    ]
    records: list[Record] = []
    if not partitions:  # the connector has not created the topics yet
        return records
    # "earliest": an offset reset racing the seek below must not jump to the end.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        pending = {tp for tp, end in ends.items() if end > 0}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while pending and loop.time() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, got in batch.items():
                for r in got:
                    if r.offset < ends[tp]:
                        records.append(Record(r.topic, r.partition, r.offset, r.key, r.value))
            # By position, not by the last record's offset: offsets the consumer skips
            # (transaction markers) never come back as records.
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        assert not pending, f"could not read {pending} to their ends in {timeout_s} s"
    finally:
        await consumer.stop()
    return records
