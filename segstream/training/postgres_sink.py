"""The generator's second sink: the thelook tables written into a PostgreSQL schema.

``segstream generate --db URL`` makes the same tables as the Parquet sink
(:func:`segstream.training.generate.write_tables`), with thelook's key types: BigQuery's INT64
becomes ``bigint``, FLOAT64 ``double precision``, STRING ``text``, TIMESTAMP ``timestamptz``;
``users.id``, ``orders.order_id``, ``order_items.id`` and ``products.id`` are primary keys.
Rows go in with COPY. Each table gets ``REPLICA IDENTITY FULL``, so that a change-data-capture
reader sees every old column of an updated or deleted row (the old ``user_id`` of an order that
moved), see docs/cdc.md.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from segstream.errors import DataError, ServiceError
from segstream.training.generate import TABLE_NAMES, Tables

__all__ = ["PRIMARY_KEYS", "column_types", "connect", "write_database"]

PRIMARY_KEYS: dict[str, str] = {
    "users": "id",
    "orders": "order_id",
    "order_items": "id",
    "products": "id",
}
"""Each thelook table's primary key column."""


def column_types(schema: pa.Schema) -> list[tuple[str, str]]:
    """``(column, PostgreSQL type)`` for each field of an Arrow table of the generator.

    Raises:
        DataError: a field has a type thelook's tables do not use.
    """
    out = []
    for field in schema:
        if pa.types.is_integer(field.type):
            sql = "bigint"
        elif pa.types.is_floating(field.type):
            sql = "double precision"
        elif pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            sql = "text"
        elif pa.types.is_timestamp(field.type):
            sql = "timestamptz"
        else:
            raise DataError(f"column {field.name} has type {field.type}, which thelook lacks")
        out.append((field.name, sql))
    return out


def connect(url: str, **kwargs: Any) -> Any:
    """A psycopg connection to a ``postgresql://`` (or SQLAlchemy ``postgresql+psycopg://``) URL.

    Raises:
        DataError: the URL is not a PostgreSQL one.
        ServiceError: the server cannot be reached or refuses the login.
    """
    import psycopg

    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+")[0] not in {"postgresql", "postgres"}:
        raise DataError(f"expected a postgresql:// database URL, got {scheme or url!r}")
    try:
        return psycopg.connect(f"postgresql://{rest}", **kwargs)
    except psycopg.OperationalError as exc:
        raise ServiceError(f"cannot connect to the database: {exc}") from exc


def write_database(
    tables: Tables, url: str, schema: str = "public", *, replace: bool = False
) -> dict[str, int]:
    """Create the four tables in ``schema`` of the database at ``url`` and copy the rows in.

    One transaction: either all four tables are there with their rows, or none changed.
    Returns the rows written per table.

    Raises:
        DataError: a table exists already and ``replace`` is false, or a statement fails.
        ServiceError: the database cannot be reached.
    """
    import psycopg
    from psycopg import sql

    with connect(url) as conn:
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
                existing = _existing(conn, schema)
                if existing and not replace:
                    raise DataError(
                        f"the database has {', '.join(existing)} in schema {schema} already: "
                        "pass --replace to drop and rewrite them"
                    )
                for name in reversed(TABLE_NAMES):
                    table = sql.Identifier(schema, name)
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(table))
                counts = {}
                for name in TABLE_NAMES:
                    counts[name] = _create_and_copy(conn, schema, name, getattr(tables, name))
        except psycopg.Error as exc:
            raise DataError(f"writing the tables failed: {exc}") from exc
    return counts


def _existing(conn: Any, schema: str) -> list[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = %s AND table_name = ANY(%s) ORDER BY table_name",
        (schema, list(TABLE_NAMES)),
    ).fetchall()
    return [row[0] for row in rows]


def _create_and_copy(conn: Any, schema: str, name: str, table: pa.Table) -> int:
    from psycopg import sql

    types = column_types(table.schema)
    target = sql.Identifier(schema, name)
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(column), sql.SQL(kind)) for column, kind in types
    )
    key = sql.Identifier(PRIMARY_KEYS[name])
    conn.execute(sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY ({}))").format(target, columns, key))
    # Updates and deletes carry every old column (the old user_id of a moved order).
    conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(target))
    names = sql.SQL(", ").join(sql.Identifier(column) for column, _ in types)
    with (
        conn.cursor() as cursor,
        cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(target, names)) as copy,
    ):
        for batch in table.to_batches(max_chunksize=50_000):
            for row in zip(*(column.to_pylist() for column in batch.columns), strict=True):
                copy.write_row(row)
    return int(table.num_rows)
