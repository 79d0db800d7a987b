"""Reading thelook tables: a directory of Parquet/CSV files through DuckDB, or any SQLAlchemy URL.

Public API:

- :class:`DataSource` describes where the tables are (exactly one of ``path`` / ``url``).
- :func:`read_features` runs ``features.sql`` and returns the feature frame: columns
  ``user_id`` + :data:`~segstream.training.features.FEATURE_COLUMNS`, one row per user, sorted
  by ``user_id``; ``user_id``, ``age`` and ``total_orders`` are int64, the rest strings.
  Rows whose values break the input table's rules (``segstream/training/inputs.py``: an age
  of -5 or 30.5, a 65-character country) are left out too, counted per field and reason
  (:func:`read_checked_features`), as the stream dead-letters such events.
- :func:`read_exclusions` counts the users the feature query leaves out and why.
- :func:`read_tables` returns the four raw tables as Arrow tables.
- :func:`run_query` runs any portable SELECT over the four tables (used by
  :mod:`segstream.training.events` for the stream's replay).

A directory holds, per table, ``<table>.parquet``, a folder ``<table>/`` of ``*.parquet`` files,
or ``<table>.csv`` (with a header line; empty fields are NULL). A URL is a SQLAlchemy URL of a
PostgreSQL or SQLite database with the four tables in its default schema (the feature query
needs each dialect's code point collation, see ``features.CODE_POINT_COLLATIONS``; other
dialects are refused by name); connecting is retried with backoff.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb
import pandas as pd
import pyarrow as pa

from segstream.errors import DataError, ServiceError
from segstream.training.features import (
    EXCLUSION_REASONS,
    FEATURE_COLUMNS,
    ID_COLUMN,
    NUMERIC_COLUMNS,
    Exclusions,
    exclusion_sql,
    feature_sql,
)
from segstream.training.frame_check import FrameCheck, check_frame
from segstream.training.generate import TABLE_NAMES, Tables

__all__ = [
    "REQUIRED_COLUMNS",
    "DataSource",
    "read_checked_features",
    "read_exclusions",
    "read_features",
    "read_tables",
    "run_query",
]

log = logging.getLogger(__name__)

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("id", "age", "gender", "country", "traffic_source", "created_at"),
    "orders": ("order_id", "user_id", "status", "created_at"),
    "order_items": ("id", "order_id", "product_id"),
    "products": ("id", "brand", "category"),
}
"""Columns each table must have for the feature query and the event replay."""

_CONNECT_ATTEMPTS = 4
_CONNECT_FIRST_DELAY_S = 0.5

T = TypeVar("T")


@dataclass(frozen=True)
class DataSource:
    """Where thelook's tables live: a directory (``path``) or a SQLAlchemy ``url``, not both."""

    path: Path | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.url is None):
            raise DataError("give exactly one data source: a directory or a database URL")

    @classmethod
    def from_args(cls, data: str | Path | None, db: str | None) -> DataSource:
        """The source named by the CLI's ``--data DIR`` / ``--db URL`` pair."""
        return cls(path=Path(data) if data is not None else None, url=db)

    def dialect(self) -> str:
        """``duckdb`` for a directory, else the URL's SQLAlchemy backend (``postgresql``,
        ``sqlite``, ...), read from the URL alone.

        Raises:
            DataError: the URL is malformed.
        """
        if self.path is not None:
            return "duckdb"
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            return make_url(self.url or "").get_backend_name()
        except ArgumentError as exc:
            raise DataError(f"bad database URL: {exc}") from exc

    def describe(self) -> str:
        """A human-readable name, with any password in the URL hidden."""
        if self.path is not None:
            return str(self.path)
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            return make_url(self.url or "").render_as_string(hide_password=True)
        except ArgumentError:  # malformed: connecting reports it; here we only name it
            return "<database URL>"


def _table_reader(directory: Path, table: str) -> str:
    """DuckDB's table function reading ``table`` from ``directory``; raises DataError if absent."""
    candidates = (
        (directory / f"{table}.parquet", "read_parquet"),
        (directory / table, "read_parquet"),
        (directory / f"{table}.csv", "read_csv"),
    )
    for candidate, reader in candidates:
        if candidate.is_file() or (candidate.is_dir() and any(candidate.glob("*.parquet"))):
            target = candidate / "*.parquet" if candidate.is_dir() else candidate
            quoted = str(target).replace("'", "''")
            extra = ", header = true" if reader == "read_csv" else ""
            return f"{reader}('{quoted}'{extra})"
    raise DataError(
        f"no {table} table in {directory}: expected {table}.parquet, {table}/*.parquet "
        f"or {table}.csv"
    )


def _duckdb_over(directory: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per thelook table of ``directory``."""
    if not directory.is_dir():
        raise DataError(f"data directory {directory} does not exist")
    # No progress bar: it would scribble over the CLI's own progress display.
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        for table in TABLE_NAMES:
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM {_table_reader(directory, table)}")
            columns = {row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()}
            _check_columns(table, columns, str(directory))
    except duckdb.Error as exc:
        con.close()
        raise DataError(f"cannot read the tables in {directory}: {exc}") from exc
    except DataError:
        con.close()
        raise
    return con


def _check_columns(table: str, columns: set[str], where: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS[table] if c not in columns]
    if missing:
        raise DataError(f"table {table} in {where} lacks columns {missing}")


def _retry(action: Callable[[], T], what: str, transient: type[BaseException]) -> T:
    """Run ``action``, retrying ``transient`` errors with exponential backoff.

    Raises:
        ServiceError: still failing after the last attempt.
    """
    delay = _CONNECT_FIRST_DELAY_S
    for attempt in range(1, _CONNECT_ATTEMPTS + 1):
        try:
            return action()
        except transient as exc:
            if attempt == _CONNECT_ATTEMPTS:
                raise ServiceError(f"{what} failed after {attempt} attempts: {exc}") from exc
            log.warning("%s failed (attempt %d), retrying in %.1fs: %s", what, attempt, delay, exc)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _engine_url(url: str) -> str:
    """``url``, with a bare ``postgresql://`` sent to psycopg 3 when psycopg2 is absent.

    SQLAlchemy's default PostgreSQL driver is psycopg2; segstream depends on psycopg (3), so
    the plain URL a user is most likely to type works as is.
    """
    from importlib.util import find_spec

    scheme, sep, rest = url.partition("://")
    if sep and scheme in {"postgresql", "postgres"} and find_spec("psycopg2") is None:
        return f"postgresql+psycopg://{rest}"
    return url


def _sql_query(url: str, sql: str, check_tables: bool) -> pd.DataFrame:
    """Run ``sql`` over a SQLAlchemy URL; the connection is retried, the query is not."""
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc

    try:
        engine = sa.create_engine(_engine_url(url))
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as exc:
        raise DataError(f"bad database URL: {exc}") from exc
    try:
        conn = _retry(engine.connect, "connecting to the database", sa_exc.OperationalError)
        with conn:
            if check_tables:
                inspector = sa.inspect(conn)
                for table in TABLE_NAMES:
                    if not inspector.has_table(table):
                        raise DataError(f"the database has no {table} table")
                    names = {c["name"] for c in inspector.get_columns(table)}
                    _check_columns(table, names, "the database")
            return pd.read_sql_query(sa.text(sql), conn)
    except sa_exc.SQLAlchemyError as exc:
        raise DataError(f"query failed on the database: {exc}") from exc
    finally:
        engine.dispose()


def run_query(source: DataSource, sql: str) -> pd.DataFrame:
    """Run one portable SELECT over the four tables of ``source``.

    Raises:
        DataError: a table or required column is missing, or the query fails.
        ServiceError: the database cannot be reached after retries.
    """
    if source.path is not None:
        con = _duckdb_over(source.path)
        try:
            return con.execute(sql).df()
        except duckdb.Error as exc:
            raise DataError(f"query failed over {source.path}: {exc}") from exc
        finally:
            con.close()
    return _sql_query(source.url or "", sql, check_tables=True)


def read_features(source: DataSource) -> pd.DataFrame:
    """The feature frame of every user with an order, no missing feature and valid values.

    Returns:
        Columns ``user_id`` + FEATURE_COLUMNS, one row per user sorted by ``user_id``;
        ``user_id``/``age``/``total_orders`` int64, categorical columns strings.

    Raises:
        DataError: missing table or column, a failing query, duplicate user ids, or no rows.
        ServiceError: the database cannot be reached after retries.
    """
    return read_checked_features(source).frame


def read_checked_features(source: DataSource) -> FrameCheck:
    """:func:`read_features`'s frame, and the rows the input table refused (per field and
    reason, with an example message), which it leaves out and logs as a warning.

    Raises:
        DataError, ServiceError: as :func:`read_features`; also when every row is refused.
    """
    queried = run_query(source, feature_sql(source.dialect()))
    if queried.empty:
        raise DataError(f"no user with an order and complete features in {source.describe()}")
    check = check_frame(queried[[ID_COLUMN, *FEATURE_COLUMNS]], (ID_COLUMN, *FEATURE_COLUMNS))
    if check.refused:
        log.warning(
            "%d users of %s left out, their values breaking the input rules: %s",
            check.total,
            source.describe(),
            "; ".join(
                f"{n} {key} (e.g. {check.examples[key]})" for key, n in check.refused.items()
            ),
        )
    if check.frame.empty:
        raise DataError(
            f"every user of {source.describe()} has a value the input rules refuse "
            f"(segstream/training/inputs.py): {', '.join(check.examples.values())}"
        )
    frame = check.frame
    ints = (ID_COLUMN, *NUMERIC_COLUMNS)
    frame = frame.astype({c: "int64" for c in ints} | {c: str for c in frame if c not in ints})
    if frame[ID_COLUMN].duplicated().any():
        dups = frame.loc[frame[ID_COLUMN].duplicated(), ID_COLUMN].head(5).tolist()
        raise DataError(f"users.id is not unique in {source.describe()}: e.g. {dups}")
    return FrameCheck(frame.reset_index(drop=True), check.refused, check.examples)


def read_exclusions(source: DataSource) -> Exclusions:
    """How many users of ``source`` :func:`read_features` leaves out, and why.

    One more pass over the tables (``exclusion_sql``). Over a database that changes between
    the two queries, ``segmented`` may differ from the rows read before.

    Raises:
        DataError: missing table or column, or a failing query.
        ServiceError: the database cannot be reached after retries.
    """
    row = run_query(source, exclusion_sql(source.dialect())).iloc[0]
    return Exclusions(
        users=int(row["users"]),
        segmented=int(row["segmented"]),
        no_orders=int(row["no_orders"]),
        missing={c: int(row[f"missing_{c}"]) for c in EXCLUSION_REASONS},
    )


def read_tables(source: DataSource) -> Tables:
    """The four raw tables (all their columns) as Arrow tables, in storage order."""
    if source.path is not None:
        con = _duckdb_over(source.path)
        try:
            tables = {t: con.sql(f"SELECT * FROM {t}").to_arrow_table() for t in TABLE_NAMES}
        except duckdb.Error as exc:
            raise DataError(f"cannot read the tables in {source.path}: {exc}") from exc
        finally:
            con.close()
        return Tables(**tables)
    frames = {t: run_query(source, f"SELECT * FROM {t}") for t in TABLE_NAMES}
    return Tables(**{t: pa.Table.from_pandas(f, preserve_index=False) for t, f in frames.items()})
