"""The generator's PostgreSQL sink: thelook's types as PostgreSQL column types."""

from __future__ import annotations

import pyarrow as pa
import pytest

from segstream.errors import DataError
from segstream.training.generate import TABLE_NAMES, generate_catalogue, generate_tables
from segstream.training.postgres_sink import PRIMARY_KEYS, column_types, connect


def test_every_generated_column_gets_thelooks_type() -> None:
    tables = generate_tables(20, seed=1, products=generate_catalogue(1, 10))
    users = dict(column_types(tables.users.schema))
    assert users["id"] == "bigint"
    assert users["latitude"] == "double precision"
    assert users["country"] == "text"
    assert users["created_at"] == "timestamptz"
    for name in TABLE_NAMES:
        columns = dict(column_types(getattr(tables, name).schema))
        assert columns[PRIMARY_KEYS[name]] == "bigint"
        assert len(columns) == getattr(tables, name).num_columns


def test_a_type_thelook_lacks_is_refused() -> None:
    with pytest.raises(DataError, match="flag"):
        column_types(pa.schema([("flag", pa.bool_())]))


def test_a_url_of_another_database_is_refused() -> None:
    with pytest.raises(DataError, match="postgresql://"):
        connect("sqlite:///shop.db")
