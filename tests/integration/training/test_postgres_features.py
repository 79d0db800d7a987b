"""The feature SQL over a real PostgreSQL (through SQLAlchemy) gives exactly DuckDB's features."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from segstream.errors import DataError, ServiceError
from segstream.training.data import DataSource, read_exclusions, read_features, read_tables
from segstream.training.generate import TABLE_NAMES, generate_tables, load_catalogue, write_tables

pytestmark = pytest.mark.integration

REAL_PRODUCTS = Path(__file__).resolve().parents[3] / "../shared/data/thelook/products.parquet"


def _copy_rows(table: Any, conn: Any, keys: list[str], data_iter: Iterable[tuple]) -> None:
    """pandas ``to_sql`` method using PostgreSQL's COPY: 10x faster than INSERTs."""
    columns = ", ".join(f'"{k}"' for k in keys)
    with conn.connection.cursor() as cursor:
        target = f'"{table.schema}"."{table.name}"'
        with cursor.copy(f"COPY {target} ({columns}) FROM STDIN") as copy:
            for row in data_iter:
                copy.write_row(row)


def _load(url: str, schema: str, directory: Path) -> str:
    """Copy the Parquet tables of ``directory`` into ``schema``; returns a URL searching it."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        for table in TABLE_NAMES:
            frame = pd.read_parquet(directory / f"{table}.parquet")
            frame.to_sql(table, conn, schema=schema, index=False, method=_copy_rows)
    engine.dispose()
    return f"{url}?options=-csearch_path%3D{schema}"


@pytest.fixture(scope="module")
def generated(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """3,000 generated users (generated catalogue: lower-case and accented brands)."""
    directory = tmp_path_factory.mktemp("pg-generated")
    write_tables(generate_tables(3_000, seed=21), directory)
    return directory, _load(postgres_url, "generated", directory)


def test_the_database_orders_strings_linguistically(generated: tuple[Path, str]) -> None:
    """Guard: without COLLATE "C" this server would break ties differently from DuckDB."""
    engine = sa.create_engine(generated[1])
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 'a' < 'B', 'e' < 'É'")).one() == (True, True)
        assert conn.execute(sa.text("SELECT 'B' < 'a' COLLATE \"C\"")).scalar() is True
    engine.dispose()


def test_postgres_features_equal_duckdb_features(generated: tuple[Path, str]) -> None:
    directory, url = generated
    from_duckdb = read_features(DataSource(path=directory))
    from_postgres = read_features(DataSource(url=url))
    pd.testing.assert_frame_equal(from_postgres, from_duckdb)
    assert len(from_duckdb) > 2_000


def test_postgres_exclusions_equal_duckdb_exclusions(generated: tuple[Path, str]) -> None:
    directory, url = generated
    from_postgres = read_exclusions(DataSource(url=url))
    assert from_postgres == read_exclusions(DataSource(path=directory))
    assert from_postgres.users == 3_000 and from_postgres.no_orders > 0


def test_postgres_features_equal_duckdb_on_the_real_catalogue(
    postgres_url: str, tmp_path: Path
) -> None:
    if not REAL_PRODUCTS.is_file():
        pytest.skip("thelook's products.parquet is not beside the repository")
    write_tables(generate_tables(3_000, seed=22, products=load_catalogue(REAL_PRODUCTS)), tmp_path)
    url = _load(postgres_url, "real", tmp_path)
    pd.testing.assert_frame_equal(
        read_features(DataSource(url=url)), read_features(DataSource(path=tmp_path))
    )


def test_raw_tables_read_from_postgres(generated: tuple[Path, str]) -> None:
    directory, url = generated
    tables = read_tables(DataSource(url=url))
    assert tables.users.num_rows == 3_000
    assert (
        tables.order_items.num_rows == pd.read_parquet(directory / "order_items.parquet").shape[0]
    )


def test_a_missing_table_is_a_clear_error(postgres_url: str, tmp_path: Path) -> None:
    write_tables(generate_tables(50, seed=1), tmp_path)
    url = _load(postgres_url, "incomplete", tmp_path)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE incomplete.products"))
    engine.dispose()
    with pytest.raises(DataError, match="no products table"):
        read_features(DataSource(url=url))


def test_an_unreachable_database_is_a_service_error_after_retries() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ServiceError, match="after 4 attempts"):
        read_features(DataSource(url=f"postgresql+psycopg://nobody@127.0.0.1:{port}/none"))


def test_a_plain_postgresql_url_works_without_psycopg2(generated: tuple[Path, str]) -> None:
    directory, url = generated
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    pd.testing.assert_frame_equal(
        read_features(DataSource(url=plain)), read_features(DataSource(path=directory))
    )
