"""The feature definitions: the Python tie rule and the SQL over DuckDB agree, on purpose."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segstream.errors import DataError
from segstream.training.data import (
    DataSource,
    read_checked_features,
    read_exclusions,
    read_features,
)
from segstream.training.features import (
    CATEGORICAL_COLUMNS,
    FEATURE_COLUMNS,
    NUMERIC_COLUMNS,
    Exclusions,
    clean_category,
    exclusion_sql,
    feature_sql,
    most_frequent,
)
from segstream.training.generate import TABLE_NAMES, generate_tables, write_tables


def test_feature_columns_are_the_contracted_order() -> None:
    assert FEATURE_COLUMNS == (
        "age",
        "gender",
        "country",
        "traffic_source",
        "total_orders",
        "most_frequent_brand",
        "most_frequent_category",
    )
    assert set(NUMERIC_COLUMNS) | set(CATEGORICAL_COLUMNS) == set(FEATURE_COLUMNS)
    assert "user_id" not in FEATURE_COLUMNS


def test_most_frequent_picks_the_highest_count() -> None:
    assert most_frequent({"Levi's": 1, "Calvin Klein": 3, "Adidas": 2}) == "Calvin Klein"


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"b": 2, "a": 2}, "a"),
        ({"a": 1, "B": 1}, "B"),  # code point order: upper case before lower case
        ({"é": 1, "f": 1}, "f"),  # accents after ASCII
        ({"Nygård": 2, "Nygard": 2}, "Nygard"),
        ({"a": 2, "aa": 2}, "a"),  # a prefix sorts first
    ],
)
def test_ties_go_to_the_code_point_first_value(counts: dict[str, int], expected: str) -> None:
    assert most_frequent(counts) == expected
    assert most_frequent(dict(reversed(list(counts.items())))) == expected


def test_missing_values_and_empty_counts_are_not_counted() -> None:
    assert most_frequent({"": 5, "Jockey": 1, "Zara": 0}) == "Jockey"
    assert most_frequent({}) is None
    assert most_frequent({"": 3}) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), (float("nan"), None), ("F", "F"), (" x ", " x ")],
)
def test_clean_category_treats_null_nan_and_empty_as_missing(
    value: object, expected: object
) -> None:
    assert clean_category(value) == expected


def test_the_sql_has_no_colons_so_sqlalchemy_sees_no_bind_parameters() -> None:
    assert ":" not in feature_sql()
    assert ":" not in exclusion_sql()


def _write(directory: Path, **tables: pd.DataFrame) -> DataSource:
    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        pq.write_table(
            pa.Table.from_pandas(frame, preserve_index=False), directory / f"{name}.parquet"
        )
    return DataSource(path=directory)


def _tiny_tables() -> dict[str, pd.DataFrame]:
    """Hand-made tables whose features are known; see each test for the user it exercises."""
    ts = pd.Timestamp("2024-01-01", tz="UTC")
    users = pd.DataFrame(
        {
            "id": [1, 2, 3, 4, 5, 6, 7],
            "age": [30, 40, 50, 60, None, 25, 33],
            "gender": ["F", "M", "F", "M", "F", "", "F"],
            "country": ["Brasil", "China", "Japan", "Spain", "China", "China", "Japan"],
            "traffic_source": ["Search"] * 7,
            "created_at": [ts] * 7,
        }
    )
    orders = pd.DataFrame(
        {
            "order_id": [10, 11, 12, 20, 30, 50, 60, 70],
            "user_id": [1, 1, 1, 2, 3, 5, 6, 7],
            "status": [
                "Complete",
                "Cancelled",
                "Returned",
                "Shipped",
                "Complete",
                "Complete",
                "Complete",
                "Complete",
            ],
            "created_at": [ts] * 8,
        }
    )
    products = pd.DataFrame(
        {
            "id": [100, 101, 102, 103, 104, 105],
            "brand": ["b-brand", "B-brand", "", None, "É", "e"],
            "category": ["Jeans", "Jeans", "Swim", "Swim", "Socks", "Socks"],
        }
    )
    items = pd.DataFrame(
        {
            # user 1: b-brand x1, B-brand x1 (tie -> "B-brand"); Jeans x2 beats Swim x1.
            # user 2: "" x2 and NULL x2 are not counted; e x1 -> "e"; Swim x4 vs Socks x1.
            # user 3: É x1, e x1 -> "e" (code point order, accents last); an unknown product.
            # user 7: only items without a brand ("" and NULL): no most frequent brand.
            "id": list(range(1, 16)),
            "order_id": [10, 12, 11, 20, 20, 20, 20, 20, 30, 30, 30, 50, 60, 70, 70],
            "product_id": [
                100,
                101,
                102,
                102,
                102,
                103,
                103,
                105,
                104,
                105,
                999,
                100,
                100,
                102,
                103,
            ],
        }
    )
    return {"users": users, "orders": orders, "order_items": items, "products": products}


@pytest.fixture
def tiny(tmp_path: Path) -> pd.DataFrame:
    return read_features(_write(tmp_path / "tiny", **_tiny_tables())).set_index("user_id")


def test_total_orders_counts_distinct_orders_of_any_status(tiny: pd.DataFrame) -> None:
    assert tiny.loc[1, "total_orders"] == 3  # Complete, Cancelled and Returned all count


def test_brand_ties_go_to_the_code_point_first_brand(tiny: pd.DataFrame) -> None:
    assert tiny.loc[1, "most_frequent_brand"] == "B-brand"
    assert tiny.loc[3, "most_frequent_brand"] == "e"


def test_missing_brands_are_not_counted(tiny: pd.DataFrame) -> None:
    assert tiny.loc[2, "most_frequent_brand"] == "e"
    assert tiny.loc[2, "most_frequent_category"] == "Swim"


def test_users_without_orders_or_with_missing_values_are_excluded(tiny: pd.DataFrame) -> None:
    # 4 has no order, 5 has no age, 6 has an empty gender, 7 no item with a brand.
    assert list(tiny.index) == [1, 2, 3]


def test_exclusions_count_the_users_left_out_by_reason(tmp_path: Path) -> None:
    source = _write(tmp_path / "tiny", **_tiny_tables())
    exclusions = read_exclusions(source)
    assert exclusions == Exclusions(
        users=7,
        segmented=3,
        no_orders=1,
        missing={
            "age": 1,
            "gender": 1,
            "country": 0,
            "traffic_source": 0,
            "most_frequent_brand": 1,
            "most_frequent_category": 0,
        },
    )
    assert (exclusions.excluded, exclusions.missing_features) == (4, 3)
    assert Exclusions.from_json(exclusions.to_json()) == exclusions


def test_exclusions_agree_with_the_feature_rows_on_generated_data(
    small_data: Path, small_features: pd.DataFrame
) -> None:
    exclusions = read_exclusions(DataSource(path=small_data))
    users = pd.read_parquet(small_data / "users.parquet")
    buyers = set(pd.read_parquet(small_data / "orders.parquet")["user_id"])
    assert exclusions.users == len(users)
    assert exclusions.segmented == len(small_features)
    assert exclusions.no_orders == int((~users["id"].isin(buyers)).sum()) > 0
    # Every buyer left out misses at least one feature.
    left_out = buyers - set(small_features["user_id"])
    assert exclusions.missing_features == len(left_out)
    assert sum(exclusions.missing.values()) >= len(left_out)


@pytest.mark.parametrize(
    "document",
    [None, [], {"users": 1}, {"users": 1, "segmented": 1, "no_orders": 0, "missing": {}}],
)
def test_exclusions_from_anything_else_than_their_json_are_none(document: object) -> None:
    assert Exclusions.from_json(document) is None


def test_feature_frame_has_ids_then_features_with_integer_numbers(tiny: pd.DataFrame) -> None:
    frame = tiny.reset_index()
    assert list(frame.columns) == ["user_id", *FEATURE_COLUMNS]
    assert {str(frame[c].dtype) for c in ("user_id", *NUMERIC_COLUMNS)} == {"int64"}


def test_sql_agrees_with_python_rule_on_generated_data(
    small_data: Path, small_features: pd.DataFrame
) -> None:
    """Recompute every user's features in plain Python with most_frequent and compare."""
    users = pd.read_parquet(small_data / "users.parquet").set_index("id")
    orders = pd.read_parquet(small_data / "orders.parquet")
    items = pd.read_parquet(small_data / "order_items.parquet")
    products = pd.read_parquet(small_data / "products.parquet").set_index("id")
    owner = dict(zip(orders["order_id"], orders["user_id"], strict=True))
    brands: dict[int, Counter[str]] = {}
    categories: dict[int, Counter[str]] = {}
    for order_id, product_id in zip(items["order_id"], items["product_id"], strict=True):
        user = owner[order_id]
        brands.setdefault(user, Counter())[products.at[product_id, "brand"]] += 1
        categories.setdefault(user, Counter())[products.at[product_id, "category"]] += 1
    n_orders = orders.groupby("user_id")["order_id"].nunique()
    expected = pd.DataFrame(
        {
            "user_id": sorted(brands),
            "most_frequent_brand": [most_frequent(brands[u]) for u in sorted(brands)],
            "most_frequent_category": [most_frequent(categories[u]) for u in sorted(brands)],
            "total_orders": [int(n_orders[u]) for u in sorted(brands)],
            "age": [int(users.at[u, "age"]) for u in sorted(brands)],
        }
    )
    actual = small_features[expected.columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False)
    ties = sum(1 for c in brands.values() if list(c.values()).count(max(c.values())) > 1)
    assert ties > 100, "the data should exercise the tie rule"


def test_csv_files_give_the_same_features_as_parquet(
    tmp_path: Path, small_features: pd.DataFrame
) -> None:
    tables = generate_tables(4_000, seed=7)
    for name, table in tables.as_dict().items():
        table.to_pandas().to_csv(tmp_path / f"{name}.csv", index=False)
    from_csv = read_features(DataSource(path=tmp_path))
    pd.testing.assert_frame_equal(from_csv, small_features, check_dtype=False)


def test_missing_table_is_a_clear_error(tmp_path: Path) -> None:
    tables = _tiny_tables()
    del tables["products"]
    with pytest.raises(DataError, match="no products table"):
        read_features(_write(tmp_path, **tables))


def test_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    tables = _tiny_tables()
    tables["users"] = tables["users"].drop(columns=["country"])
    with pytest.raises(DataError, match=r"users .* lacks columns \['country'\]"):
        read_features(_write(tmp_path, **tables))


def test_data_without_any_order_is_a_clear_error(tmp_path: Path) -> None:
    tables = _tiny_tables()
    tables["orders"] = tables["orders"].iloc[0:0]
    with pytest.raises(DataError, match="no user with an order"):
        read_features(_write(tmp_path, **tables))


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_features(DataSource(path=tmp_path / "nope"))


def test_a_source_is_a_directory_or_a_url_not_both(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        DataSource(path=tmp_path, url="postgresql://x")
    with pytest.raises(DataError):
        DataSource()


def test_generated_tables_roundtrip_through_write(tmp_path: Path) -> None:
    write_tables(generate_tables(300, seed=1), tmp_path)
    assert len(read_features(DataSource(path=tmp_path))) > 150


def _sqlite(path: Path, tables: dict[str, pd.DataFrame]) -> DataSource:
    """``tables`` written into a new SQLite file by pandas through SQLAlchemy."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        for name, frame in tables.items():
            frame.to_sql(name, conn, index=False)
    engine.dispose()
    return DataSource(url=f"sqlite:///{path}")


def test_sqlite_features_equal_duckdb_features_on_generated_data(
    tmp_path: Path, small_data: Path, small_features: pd.DataFrame
) -> None:
    """The same thelook tables in a SQLite file give exactly DuckDB's feature frame."""
    tables = {name: pd.read_parquet(small_data / f"{name}.parquet") for name in TABLE_NAMES}
    from_sqlite = read_features(_sqlite(tmp_path / "thelook.db", tables))
    pd.testing.assert_frame_equal(from_sqlite, small_features)
    assert len(from_sqlite) > 3_000


def test_sqlite_breaks_ties_in_code_point_order(tmp_path: Path, tiny: pd.DataFrame) -> None:
    from_sqlite = read_features(_sqlite(tmp_path / "tiny.db", _tiny_tables()))
    pd.testing.assert_frame_equal(from_sqlite.set_index("user_id"), tiny)
    assert from_sqlite.set_index("user_id").loc[1, "most_frequent_brand"] == "B-brand"


def test_each_supported_dialect_gets_its_code_point_collation() -> None:
    assert feature_sql("sqlite").count("COLLATE BINARY ASC") == 2
    assert feature_sql("postgresql").count('COLLATE "C" ASC') == 2
    assert "BINARY" not in feature_sql("duckdb")


def test_an_unsupported_dialect_is_refused_naming_the_supported_ones() -> None:
    source = DataSource(url="mysql+pymysql://user@localhost/thelook")
    with pytest.raises(
        DataError, match=r"mysql databases are not supported.*duckdb, postgresql, sqlite"
    ):
        read_features(source)


def test_values_the_input_rules_refuse_are_left_out_and_counted(tmp_path: Path) -> None:
    """An age of -41 or 50.5 is refused as the stream and the API refuse it; 30.0 is 30."""
    tables = _tiny_tables()
    tables["users"]["age"] = [30.0, -41.0, 50.5, 60.0, None, 25.0, 33.0]
    checked = read_checked_features(_write(tmp_path / "tiny", **tables))
    assert checked.frame["user_id"].tolist() == [1]
    assert checked.frame["age"].tolist() == [30] and str(checked.frame["age"].dtype) == "int64"
    assert checked.refused == {"age out_of_range": 1, "age wrong_type": 1}
    assert checked.examples == {
        "age out_of_range": "age must be a whole number from 0 to 120, got -41",
        "age wrong_type": "age must be a whole number from 0 to 120, got 50.5",
    }
