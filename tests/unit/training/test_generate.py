"""The thelook-shaped generator: BigQuery names and types, reproducible, plausible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from segstream.errors import DataError
from segstream.training.generate import (
    DATA_END,
    DATA_START,
    Tables,
    generate_tables,
    load_catalogue,
)

TS = pa.timestamp("us", tz="UTC")
SCHEMAS = {
    "users": {
        "id": pa.int64(), "first_name": pa.string(), "last_name": pa.string(),
        "email": pa.string(), "age": pa.int64(), "gender": pa.string(), "state": pa.string(),
        "street_address": pa.string(), "postal_code": pa.string(), "city": pa.string(),
        "country": pa.string(), "latitude": pa.float64(), "longitude": pa.float64(),
        "traffic_source": pa.string(), "created_at": TS,
    },
    "orders": {
        "order_id": pa.int64(), "user_id": pa.int64(), "status": pa.string(),
        "gender": pa.string(), "created_at": TS, "returned_at": TS, "shipped_at": TS,
        "delivered_at": TS, "num_of_item": pa.int64(),
    },
    "order_items": {
        "id": pa.int64(), "order_id": pa.int64(), "user_id": pa.int64(),
        "product_id": pa.int64(), "inventory_item_id": pa.int64(), "status": pa.string(),
        "created_at": TS, "shipped_at": TS, "delivered_at": TS, "returned_at": TS,
        "sale_price": pa.float64(),
    },
    "products": {
        "id": pa.int64(), "cost": pa.float64(), "category": pa.string(), "name": pa.string(),
        "brand": pa.string(), "retail_price": pa.float64(), "department": pa.string(),
        "sku": pa.string(), "distribution_center_id": pa.int64(),
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def tables() -> Tables:
    return generate_tables(20_000, seed=3)


def test_tables_have_bigquery_names_and_types(tables: Tables) -> None:
    for name, expected in SCHEMAS.items():
        schema = getattr(tables, name).schema
        assert {f.name: f.type for f in schema} == expected, name


def test_same_seed_gives_identical_tables_and_another_seed_does_not(tables: Tables) -> None:
    again = generate_tables(20_000, seed=3)
    for name in SCHEMAS:
        assert getattr(again, name).equals(getattr(tables, name)), name
    other = generate_tables(20_000, seed=4)
    assert not other.users.equals(tables.users)


def test_about_eighty_percent_of_users_have_an_order(tables: Tables) -> None:
    buyers = len(pc.unique(tables.orders.column("user_id")))
    assert 0.77 < buyers / tables.users.num_rows < 0.83


def test_orders_have_one_to_four_items_matching_num_of_item(tables: Tables) -> None:
    orders = tables.orders.to_pandas().set_index("order_id")
    counts = tables.order_items.to_pandas().groupby("order_id").size()
    assert counts.between(1, 4).all()
    assert (orders.loc[counts.index, "num_of_item"] == counts).all()
    assert set(orders.index) == set(counts.index)


def test_orders_come_after_their_user_signed_up(tables: Tables) -> None:
    users = tables.users.to_pandas().set_index("id")["created_at"]
    orders = tables.orders.to_pandas()
    assert (orders["created_at"].to_numpy() > users.loc[orders["user_id"]].to_numpy()).all()


def test_every_timestamp_lies_in_the_fixed_past_window(tables: Tables) -> None:
    """Nothing before DATA_START or after DATA_END (a fixed date in the past), whatever
    the day the data is generated on: 20,000 users give ~45,000 orders to check."""
    now = pd.Timestamp.now(tz="UTC")
    assert now > DATA_END
    checked = 0
    for name, table in tables.as_dict().items():
        for column in table.column_names:
            if table.schema.field(column).type != TS:
                continue
            values = table.column(column).drop_null()
            if name == "products" or len(values) == 0:
                continue
            checked += 1
            first, last = pc.min(values).as_py(), pc.max(values).as_py()
            assert first >= DATA_START and last < DATA_END, (name, column, first, last)
    assert checked == 9  # users 1, orders 4, order_items 4


def test_orders_spread_over_the_years_not_piled_up_at_the_end(tables: Tables) -> None:
    created = tables.orders.column("created_at").to_pandas()
    per_year = created.dt.year.value_counts()
    assert set(per_year.index) == set(range(DATA_START.year, DATA_END.year))
    # The last 20 days before the window closes (1% of it) hold about their fair share.
    last_day = created >= DATA_END - pd.Timedelta(days=20)
    assert last_day.mean() < 0.01


def test_items_reference_existing_products_of_the_buyers_department(tables: Tables) -> None:
    products = tables.products.to_pandas().set_index("id")
    items = tables.order_items.to_pandas()
    assert items["product_id"].isin(products.index).all()
    genders = tables.orders.to_pandas().set_index("order_id").loc[items["order_id"], "gender"]
    departments = products.loc[items["product_id"], "department"].to_numpy()
    assert (np.where(genders.to_numpy() == "F", "Women", "Men") == departments).all()


def test_distributions_follow_thelook(tables: Tables) -> None:
    users = tables.users.to_pandas()
    assert users["age"].between(12, 70).all()
    assert 0.47 < (users["gender"] == "F").mean() < 0.53
    assert 0.67 < (users["traffic_source"] == "Search").mean() < 0.73
    assert list(users["country"].value_counts().index[:3]) == ["China", "United States", "Brasil"]
    statuses = set(tables.orders.column("status").to_pylist())
    assert statuses == {"Processing", "Shipped", "Complete", "Returned", "Cancelled"}


def test_milestone_timestamps_follow_status(tables: Tables) -> None:
    orders = tables.orders.to_pandas()
    returned = orders["status"] == "Returned"
    assert orders.loc[returned, "returned_at"].notna().all()
    assert orders.loc[~returned, "returned_at"].isna().all()
    assert orders.loc[orders["status"] == "Processing", "shipped_at"].isna().all()


def test_real_catalogue_is_used_as_is(real_products: Path) -> None:
    catalogue = load_catalogue(real_products)
    tables = generate_tables(2_000, seed=1, products=catalogue)
    assert tables.products.equals(catalogue)
    ids = set(catalogue.column("id").to_pylist())
    assert set(tables.order_items.column("product_id").to_pylist()) <= ids


def test_zero_users_is_refused() -> None:
    with pytest.raises(DataError):
        generate_tables(0)


def test_unreadable_catalogue_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "products.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataError, match="cannot read the product catalogue"):
        load_catalogue(bad)
