"""The one Debezium PostgreSQL connector configuration segstream needs, built from settings.

Every setting here is explained in docs/cdc.md (``tests/unit/cdc/test_connector.py`` checks
that the page names each key this function produces). What the stream relies on:

* Topics ``<cdc_topic_prefix>.<cdc_schema>.<table>`` for users, orders, order_items, products.
* Keys as JSON without a schema: ``{"user_id": <int>}`` on the users, orders and order_items
  topics (Debezium's ``message.key.columns`` makes orders and order_items keyed by their
  user_id; Connect's ``ReplaceField$Key`` renames the users key's ``id`` to ``user_id``), so
  every change of one user has the same key bytes and, with equal partition counts, the same
  partition number. Products are keyed ``{"id": <int>}``.
* Values as JSON without the schema envelope (the worker accepts both), decimals as doubles,
  ``timestamptz`` columns as ISO-8601 strings (Debezium's ZonedTimestamp, always UTC ``Z``),
  deletes followed by a tombstone, truncates emitted (``op: "t"``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from segstream.errors import ConfigError
from segstream.settings import ENV_PREFIX, Settings

__all__ = [
    "JSON_CONVERTER",
    "TABLES",
    "USER_KEYED_TABLES",
    "connector_config",
    "database_password",
    "local_password_file",
    "table_topics",
]

TABLES: tuple[str, ...] = ("users", "orders", "order_items", "products")
"""The captured tables (thelook's), in the order their topics are listed."""

USER_KEYED_TABLES: tuple[str, ...] = ("users", "orders", "order_items")
"""Tables whose change events are keyed ``{"user_id": <int>}``: co-partitioned by user."""

JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"
"""Kafka Connect's JSON converter, for keys and values."""


def table_topics(settings: Settings) -> dict[str, str]:
    """``{table: topic}`` for the four tables: ``<prefix>.<schema>.<table>``."""
    prefix, schema = settings.cdc_topic_prefix, settings.cdc_schema
    return {table: f"{prefix}.{schema}.{table}" for table in TABLES}


def local_password_file(settings: Settings) -> Path:
    """Where the local stack keeps its replication role's password
    (``segstream.services.credentials.password_file(settings, "postgres-cdc")``)."""
    return settings.data_dir.resolve() / "secrets" / "postgres-cdc-password"


def database_password(settings: Settings) -> str:
    """The password of the ``cdc_database_url`` user: ``cdc_database_password``, or else the
    local stack's.

    Raises:
        ConfigError: neither is there.
    """
    if settings.cdc_database_password is not None:
        return settings.cdc_database_password.get_secret_value()
    path = local_password_file(settings)
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"no password for the connector's database user: set {ENV_PREFIX}CDC_DATABASE_PASSWORD "
            f"(or start the local stack with `segstream services up --cdc`, which keeps it in "
            f"{path})"
        ) from exc


def connector_config(settings: Settings, password: str) -> dict[str, str]:
    """The connector's configuration for Kafka Connect's REST API (all values strings).

    ``password`` is the ``cdc_database_url`` user's; it is in the result in clear (Connect
    needs it), so print the result only with it masked.
    """
    database = urlsplit(settings.cdc_database_url)
    schema = settings.cdc_schema
    users_topic = table_topics(settings)["users"]
    return {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": database.hostname or "",
        "database.port": str(database.port or 5432),
        "database.user": database.username or "",
        "database.password": password,
        "database.dbname": database.path.strip("/"),
        "topic.prefix": settings.cdc_topic_prefix,
        "schema.include.list": schema,
        "table.include.list": ",".join(f"{schema}.{table}" for table in TABLES),
        "publication.name": settings.cdc_publication,
        # The publication is made by the tables' owner (segstream generate --db); the
        # replication role may not create one, and must not widen it.
        "publication.autocreate.mode": "disabled",
        "slot.name": settings.cdc_slot,
        # A snapshot of the current rows first (op "r"), then the WAL from the slot on.
        "snapshot.mode": "initial",
        "decimal.handling.mode": "double",
        "time.precision.mode": "adaptive_time_microseconds",
        "tombstones.on.delete": "true",
        # Debezium skips truncates by default; the stream must see them to empty a table.
        "skipped.operations": "none",
        "message.key.columns": (f"{schema}.orders:user_id;{schema}.order_items:user_id"),
        "key.converter": JSON_CONVERTER,
        "key.converter.schemas.enable": "false",
        "value.converter": JSON_CONVERTER,
        "value.converter.schemas.enable": "false",
        "transforms": "userKey",
        "transforms.userKey.type": "org.apache.kafka.connect.transforms.ReplaceField$Key",
        "transforms.userKey.renames": "id:user_id",
        "transforms.userKey.predicate": "isUsers",
        "predicates": "isUsers",
        "predicates.isUsers.type": (
            "org.apache.kafka.connect.transforms.predicates.TopicNameMatches"
        ),
        "predicates.isUsers.pattern": users_topic.replace(".", r"\."),
        # Topics the connector creates get the partition count segstream's topics have.
        "topic.creation.default.partitions": str(settings.topic_partitions),
        "topic.creation.default.replication.factor": str(settings.topic_replication_factor or -1),
    }
