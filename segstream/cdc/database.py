"""The database side of capture: the publication Debezium reads, and what the check asks of
PostgreSQL (each table's REPLICA IDENTITY)."""

from __future__ import annotations

from typing import Any

from segstream.cdc.connector import TABLES
from segstream.settings import Settings

__all__ = ["REPLICA_IDENTITIES", "prepare_capture", "replica_identities"]

REPLICA_IDENTITIES: dict[str, str] = {
    "d": "DEFAULT",
    "n": "NOTHING",
    "f": "FULL",
    "i": "INDEX",
}
"""``pg_class.relreplident`` codes and the names ``ALTER TABLE … REPLICA IDENTITY`` takes."""


def prepare_capture(conn: Any, settings: Settings, reader: str | None = None) -> None:
    """Make the publication ``cdc_publication`` publish exactly the four tables of
    ``cdc_schema``, and let the role ``reader`` (the connector's) SELECT them when it exists.

    ``conn`` is a psycopg connection of the tables' owner; runs in its own transaction.
    """
    from psycopg import sql

    publication = sql.Identifier(settings.cdc_publication)
    tables = sql.SQL(", ").join(sql.Identifier(settings.cdc_schema, t) for t in TABLES)
    with conn.transaction():
        exists = conn.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", (settings.cdc_publication,)
        ).fetchone()
        verb = (
            "ALTER PUBLICATION {} SET TABLE {}" if exists else "CREATE PUBLICATION {} FOR TABLE {}"
        )
        conn.execute(sql.SQL(verb).format(publication, tables))
        known = (
            reader is not None
            and conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (reader,)).fetchone()
        )
        if reader is not None and known:
            conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(tables, sql.Identifier(reader)))


def replica_identities(conn: Any, schema: str) -> dict[str, str]:
    """``{table: "FULL" | "DEFAULT" | "INDEX" | "NOTHING"}`` for those of the four tables that
    exist in ``schema`` (read from ``pg_class.relreplident``)."""
    rows = conn.execute(
        "SELECT c.relname, c.relreplident FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')",
        (schema, list(TABLES)),
    ).fetchall()
    return {name: REPLICA_IDENTITIES.get(code, code) for name, code in rows}
