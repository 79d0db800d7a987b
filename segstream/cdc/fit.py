"""Whether the change topics and the captured tables fit what the stream relies on.

The stream keeps each user's state in one place because every change of one user arrives on
the same partition number of the users, orders and order_items topics; and it can retract a
deleted or moved row only when the delete carries the row's old columns. This module checks
both, as the worker does at start-up and ``segstream cdc check`` does for an operator:

* the four topics exist, and the three user-keyed ones have equal partition counts;
* their keys are ``{"user_id": <int>}`` (products: ``{"id": <int>}``), JSON without a schema;
* every table has ``REPLICA IDENTITY FULL`` (``pg_class.relreplident = 'f'``);
* when Connect is reachable, the registered connector keeps the settings that shape the topics.

Each problem names the setting to change. :func:`key_problem` and :func:`config_problems` are
pure; :func:`fit_problems` reads the topics, the database and Connect.
"""

from __future__ import annotations

import asyncio
import json

from segstream.cdc.connector import (
    TABLES,
    USER_KEYED_TABLES,
    connector_config,
    database_password,
    table_topics,
)
from segstream.errors import ConfigError, SegstreamError, ServiceError
from segstream.settings import ENV_PREFIX, Settings

__all__ = [
    "SHAPING_KEYS",
    "config_problems",
    "fit_problems",
    "key_problem",
    "require_fit",
]

SHAPING_KEYS: tuple[str, ...] = (
    "topic.prefix",
    "table.include.list",
    "message.key.columns",
    "key.converter",
    "key.converter.schemas.enable",
    "value.converter",
    "transforms",
    "transforms.userKey.type",
    "transforms.userKey.renames",
    "transforms.userKey.predicate",
    "predicates",
    "predicates.isUsers.type",
    "predicates.isUsers.pattern",
    "decimal.handling.mode",
    "skipped.operations",
    "plugin.name",
)
"""Connector settings whose value changes the key bytes, the topics or the value types the
stream reads; the rest (credentials, slot, snapshot) may differ per deployment."""

_SAMPLED = 20
"""Latest records per partition whose keys the check reads."""


def key_problem(table: str, key: bytes | None, value: bytes | None) -> str | None:
    """Why a record's key does not fit (None when it does).

    A user-keyed table's key must be exactly ``{"user_id": <int>}``, a product's
    ``{"id": <int>}``. A truncate (``op: "t"``, no key) fits: it names no row.
    """
    if key is None:
        if value is not None and _op(value) == "t":
            return None
        return f"a {table} change without a key"
    field = "user_id" if table in USER_KEYED_TABLES else "id"
    try:
        parsed = json.loads(key)
    except ValueError:
        return f"a {table} key is not JSON: {key[:80]!r}"
    if (
        not isinstance(parsed, dict)
        or list(parsed) != [field]
        or not isinstance(parsed[field], int)
        or isinstance(parsed[field], bool)
    ):
        return f'a {table} key is {key[:120].decode(errors="replace")}, not {{"{field}": <int>}}'
    return None


def _op(value: bytes) -> str | None:
    try:
        event = json.loads(value)
    except ValueError:
        return None
    if isinstance(event, dict) and isinstance(event.get("payload"), dict):
        event = event["payload"]  # the JSON converter's schema envelope
    return event.get("op") if isinstance(event, dict) else None


def config_problems(actual: dict[str, str], expected: dict[str, str]) -> list[str]:
    """The :data:`SHAPING_KEYS` on which a registered connector differs from ``expected``."""
    problems = []
    for key in SHAPING_KEYS:
        if actual.get(key) != expected.get(key):
            problems.append(
                f"connector setting {key} is {actual.get(key)!r}, segstream needs "
                f"{expected.get(key)!r} (`segstream cdc connector --register` puts the whole "
                "configuration; docs/cdc.md says why)"
            )
    return problems


def fit_problems(settings: Settings, *, check_connect: bool = True) -> list[str]:
    """Everything that keeps the topics and tables of ``settings`` from fitting (empty: fit).

    Raises:
        ServiceError: Kafka or the database cannot be reached (Connect's absence is a problem
            in the list instead, when ``check_connect``).
    """
    problems = asyncio.run(_topic_problems(settings))
    problems += _table_problems(settings)
    if check_connect:
        problems += _connector_problems(settings)
    return problems


def require_fit(settings: Settings, *, check_connect: bool = False) -> None:
    """Refuse to go on when the topics or tables do not fit (the worker's start-up check).

    Raises:
        ConfigError: listing each problem with the setting that fixes it.
        ServiceError: Kafka or the database cannot be reached.
    """
    problems = fit_problems(settings, check_connect=check_connect)
    if problems:
        raise ConfigError(
            "the change-data-capture topics do not fit segstream:\n"
            + "\n".join(f"  {p}" for p in problems)
        )


async def _topic_problems(settings: Settings) -> list[str]:
    from aiokafka import TopicPartition
    from aiokafka.errors import KafkaError

    from segstream.stream.clients.kafka import admin_client
    from segstream.stream.clients.kafka import consumer as kafka_consumer

    topics = table_topics(settings)
    admin = admin_client(settings)
    try:
        await admin.start()
        described = {t["topic"]: t for t in await admin.describe_topics(list(topics.values()))}
    except KafkaError as exc:
        raise ServiceError(
            f"cannot read the change topics' metadata from {settings.kafka_bootstrap_servers}: "
            f"{exc}"
        ) from exc
    finally:
        await admin.close()
    problems: list[str] = []
    counts: dict[str, int] = {}
    for table, topic in topics.items():
        found = described.get(topic)
        if found is None or found.get("error_code", 0) != 0 or not found.get("partitions"):
            problems.append(
                f"topic {topic} does not exist: register the connector (`segstream cdc "
                f"connector --register`), or set {ENV_PREFIX}CDC_TOPIC_PREFIX / "
                f"{ENV_PREFIX}CDC_SCHEMA to its topic.prefix and schema"
            )
            continue
        counts[table] = len(found["partitions"])
    user_counts = {topics[t]: counts[t] for t in USER_KEYED_TABLES if t in counts}
    if len(set(user_counts.values())) > 1:
        listed = ", ".join(f"{topic} has {n}" for topic, n in user_counts.items())
        problems.append(
            f"the user-keyed topics have unequal partition counts ({listed}): one user's "
            "changes would land on different partition numbers; give them equal counts "
            "(the connector's topic.creation.default.partitions, or kafka-topics --alter)"
        )
    partitions = [TopicPartition(topics[table], p) for table, n in counts.items() for p in range(n)]
    if not partitions:
        return problems
    # "earliest": an offset reset racing the seeks below reads more, never nothing.
    consumer = kafka_consumer(settings, enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        await consumer.start()
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        wanted = {}
        for tp, end in ends.items():
            if end > starts[tp]:
                consumer.seek(tp, max(starts[tp], end - _SAMPLED))
                wanted[tp] = end
        by_topic = {topic: table for table, topic in topics.items()}
        seen: set[str] = set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while wanted and loop.time() < deadline:
            batch = await consumer.getmany(*wanted, timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    problem = key_problem(by_topic[tp.topic], record.key, record.value)
                    if problem and problem not in seen:
                        seen.add(problem)
                        problems.append(
                            f"{problem} on {tp.topic}: key rewriting is missing (the "
                            "connector's message.key.columns and ReplaceField$Key transform, "
                            "see `segstream cdc connector`)"
                        )
            # By position: offsets the consumer skips (transaction markers) are no records.
            for tp in list(wanted):
                if await consumer.position(tp) >= wanted[tp]:
                    wanted.pop(tp)
    except KafkaError as exc:
        raise ServiceError(f"cannot read the change topics: {exc}") from exc
    finally:
        await consumer.stop()
    return problems


def _table_problems(settings: Settings) -> list[str]:
    import psycopg

    from segstream.cdc.database import replica_identities

    url = settings.cdc_database_url
    _, _, rest = url.partition("://")
    try:
        with psycopg.connect(
            f"postgresql://{rest}", password=database_password(settings), connect_timeout=10
        ) as conn:
            identities = replica_identities(conn, settings.cdc_schema)
    except psycopg.Error as exc:
        raise ServiceError(
            f"cannot reach the captured database {url} ({exc}): check "
            f"{ENV_PREFIX}CDC_DATABASE_URL and {ENV_PREFIX}CDC_DATABASE_PASSWORD"
        ) from exc
    problems = []
    for table in TABLES:
        name = f"{settings.cdc_schema}.{table}"
        identity = identities.get(table)
        if identity is None:
            problems.append(
                f"table {name} does not exist in {url} (schema: {ENV_PREFIX}CDC_SCHEMA)"
            )
        elif identity != "FULL":
            problems.append(
                f"table {name} has REPLICA IDENTITY {identity}: a delete or a move would not "
                f"carry the row's user; run ALTER TABLE {name} REPLICA IDENTITY FULL"
            )
    return problems


def _connector_problems(settings: Settings) -> list[str]:
    from segstream.cdc.connect_api import current_config

    try:
        actual = current_config(settings)
    except ServiceError as exc:
        return [str(exc)]
    if actual is None:
        return [
            f"Kafka Connect at {settings.connect_url} has no connector "
            f"{settings.cdc_connector_name!r} ({ENV_PREFIX}CDC_CONNECTOR_NAME): register it "
            "with `segstream cdc connector --register`"
        ]
    try:
        expected = connector_config(settings, database_password(settings))
    except SegstreamError:
        expected = connector_config(settings, "")
    return config_problems(actual, expected)
