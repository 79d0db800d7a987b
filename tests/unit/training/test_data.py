"""training/data.py: the raw tables read back from a directory of Parquet files (DuckDB)."""

from __future__ import annotations

from pathlib import Path

from segstream.training.data import DataSource, read_tables
from segstream.training.generate import TABLE_NAMES, generate_tables, write_tables


def test_the_raw_tables_read_back_whole_from_a_directory(tmp_path: Path) -> None:
    generated = generate_tables(50, seed=1)
    write_tables(generated, tmp_path)
    tables = read_tables(DataSource(path=tmp_path))
    for name in TABLE_NAMES:
        written, read = getattr(generated, name), getattr(tables, name)
        assert read.num_rows == written.num_rows, name
        assert read.column_names == written.column_names, name
