"""Synthetic thelook-shaped tables: users, orders, order_items and products, from a seed.

Column names and types follow BigQuery's ``thelook_ecommerce`` dataset (INT64 -> int64,
FLOAT64 -> float64, STRING -> string, TIMESTAMP -> timestamp[us, UTC]). The distributions follow
the facts in ``shared/data/thelook/SOURCE.md``: age uniform on 12..70, gender about half each,
traffic source mostly Search, China / United States / Brasil the largest countries, about 80%
of users with at least one order, 1 to 4 items an order, five order statuses.

Everything is vectorised NumPy: 100,000 users take about a second, 1,000,000 about ten.
The same ``seed`` and ``n_users`` (and catalogue) give the same tables, byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from segstream.errors import DataError

__all__ = [
    "DATA_END",
    "DATA_START",
    "TABLE_NAMES",
    "Tables",
    "generate_catalogue",
    "generate_tables",
    "load_catalogue",
    "write_tables",
]

TABLE_NAMES: tuple[str, ...] = ("users", "orders", "order_items", "products")
"""The four thelook tables the feature query reads, in dependency order."""

_US = 1_000_000  # microseconds a second
_DAY_US = 86_400 * _US
DATA_START = pd.Timestamp("2019-01-01", tz="UTC")
"""The earliest sign-up of generated users."""
DATA_END = pd.Timestamp("2025-01-01", tz="UTC")
"""A fixed moment in the past that no generated timestamp reaches (so the data does not
depend on when it is generated and never lies in the future)."""
_START_US = int(DATA_START.value // 1_000)
_END_US = int(DATA_END.value // 1_000)
_AFTER_ORDER_US = 19 * _DAY_US
"""Room left after an order for its milestones (shipped <= 3 d, delivered <= 5 d, returned
<= 10 d later) and its items' timestamps (<= 1 h later)."""
_LAST_ORDER_US = _END_US - _AFTER_ORDER_US
_LAST_SIGNUP_US = _LAST_ORDER_US - _DAY_US

# The distributions and vocabularies live in a data file beside this module.
_SHAPE = json.loads(
    resources.files(__package__).joinpath("thelook_shape.json").read_text(encoding="utf-8")
)
_COUNTRIES: list[dict[str, Any]] = _SHAPE["countries"]
_TRAFFIC: dict[str, float] = _SHAPE["traffic_sources"]
_STATUSES: dict[str, float] = _SHAPE["order_statuses"]
_SHARE_WITH_ORDERS: float = _SHAPE["share_of_users_with_orders"]
_ORDERS_PER_BUYER = tuple(_SHAPE["orders_per_buyer"])  # P(1), P(2), P(3), P(4) orders
_ITEMS_PER_ORDER = tuple(_SHAPE["items_per_order"])  # P(1..4) items
_FIRST: dict[str, list[str]] = _SHAPE["first_names"]
_LAST: list[str] = _SHAPE["last_names"]
_STREETS: list[str] = _SHAPE["streets"]
_CATEGORIES: dict[str, list[str]] = _SHAPE["categories_by_department"]
_SYLLABLES: list[str] = _SHAPE["brand_syllables"]
_BRAND_SUFFIX: list[str] = _SHAPE["brand_suffixes"]


@dataclass(frozen=True)
class Tables:
    """The four thelook tables as Arrow tables (BigQuery names and types)."""

    users: pa.Table
    orders: pa.Table
    order_items: pa.Table
    products: pa.Table

    def as_dict(self) -> dict[str, pa.Table]:
        """``{"users": ..., "orders": ..., "order_items": ..., "products": ...}``."""
        return {name: getattr(self, name) for name in TABLE_NAMES}


def _choice(rng: np.random.Generator, weights: tuple[float, ...], size: int) -> np.ndarray:
    """Indices drawn from normalised ``weights``; shape ``(size,)`` int64."""
    p = np.asarray(weights, dtype=np.float64)
    return rng.choice(len(p), size=size, p=p / p.sum())


def _ts(micros: np.ndarray) -> pa.Array:
    """Microseconds since the epoch as a BigQuery-like TIMESTAMP (UTC); negative = NULL."""
    return pa.array(micros, type=pa.timestamp("us", tz="UTC"), mask=micros < 0)


def _strings(values: np.ndarray) -> pa.Array:
    return pa.array(values, type=pa.string())


def generate_catalogue(seed: int = 0, n_products: int = 29_120) -> pa.Table:
    """A made-up product catalogue shaped like thelook's ``products`` table.

    Brands are invented names with a skewed size distribution (a few big brands, a long tail),
    some lower-case or accented so that the tie rule's code point order matters.
    """
    rng = np.random.default_rng([seed, 1])
    n_brands = max(2, n_products // 11)
    syllables = np.array(_SYLLABLES)
    parts = syllables[rng.integers(0, len(syllables), size=(n_brands, 3))]
    stems = pd.Series(parts[:, 0]).str.cat([parts[:, 1], parts[:, 2]])
    upper = rng.random(n_brands) < 0.9  # a tenth start lower-case, like "a.n.a" or "dELiA*s"
    stems = stems.where(~upper, stems.str.capitalize())
    suffix = np.array(_BRAND_SUFFIX)[rng.integers(0, len(_BRAND_SUFFIX), n_brands)]
    brand_names = (stems + suffix).to_numpy(dtype=object)
    popularity = 1.0 / np.arange(1, n_brands + 1) ** 0.8
    brand = brand_names[_choice(rng, tuple(popularity), n_products)]

    department = np.where(rng.random(n_products) < 0.55, "Women", "Men")
    category = np.empty(n_products, dtype=object)
    for dept, cats in _CATEGORIES.items():
        rows = np.flatnonzero(department == dept)
        category[rows] = np.array(cats, dtype=object)[rng.integers(0, len(cats), rows.size)]
    retail = np.round(rng.lognormal(3.6, 0.7, n_products), 2)
    cost = np.round(retail * rng.uniform(0.35, 0.6, n_products), 5)
    ids = np.arange(1, n_products + 1, dtype=np.int64)
    name = pd.Series(brand).str.cat(pd.Series(category), sep=" ") + " " + pd.Series(ids).astype(str)
    sku = pd.Series(rng.integers(0, 2**62, n_products)).map("{:032X}".format)
    return pa.table(
        {
            "id": ids,
            "cost": cost,
            "category": _strings(category),
            "name": _strings(name.to_numpy(dtype=object)),
            "brand": _strings(brand),
            "retail_price": retail,
            "department": _strings(department.astype(object)),
            "sku": _strings(sku.to_numpy(dtype=object)),
            "distribution_center_id": rng.integers(1, 11, n_products).astype(np.int64),
        }
    )


def load_catalogue(path: Path) -> pa.Table:
    """Read a real thelook ``products`` Parquet file (e.g. ``shared/data/thelook``).

    Raises:
        DataError: the file is missing, unreadable, or lacks id, brand, category, department
            or retail_price.
    """
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"cannot read the product catalogue {path}: {exc}") from exc
    missing = {"id", "brand", "category", "department", "retail_price"} - set(table.column_names)
    if missing:
        raise DataError(f"product catalogue {path} lacks columns {sorted(missing)}")
    if table.num_rows == 0:
        raise DataError(f"product catalogue {path} is empty")
    return table


def _users(rng: np.random.Generator, n: int) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """The users table, plus each user's gender ("F"/"M") and created_at in microseconds."""
    ids = np.arange(1, n + 1, dtype=np.int64)
    gender = np.where(rng.random(n) < 0.5, "F", "M")
    first = np.empty(n, dtype=object)
    for g, names in _FIRST.items():
        rows = np.flatnonzero(gender == g)
        first[rows] = np.array(names, dtype=object)[rng.integers(0, len(names), rows.size)]
    last = np.array(_LAST, dtype=object)[rng.integers(0, len(_LAST), n)]
    domains = np.array(["@example.com", "@example.net", "@example.org"], dtype=object)
    email = (
        pd.Series(first).str.lower()
        + "."
        + pd.Series(last).str.lower()
        + pd.Series(ids).astype(str)
    ) + domains[rng.integers(0, 3, n)]

    c_idx = _choice(rng, tuple(c["share"] for c in _COUNTRIES), n)
    places = pd.DataFrame([{"country": c["name"], **p} for c in _COUNTRIES for p in c["places"]])
    n_places = np.array([len(c["places"]) for c in _COUNTRIES])
    first_place = np.cumsum(n_places) - n_places
    p_idx = first_place[c_idx] + (rng.random(n) * n_places[c_idx]).astype(np.int64)
    country, state, city = (
        places[col].to_numpy(dtype=object)[p_idx] for col in ("country", "state", "city")
    )
    lat = np.round(places["latitude"].to_numpy()[p_idx] + rng.normal(0, 0.2, n), 6)
    lon = np.round(places["longitude"].to_numpy()[p_idx] + rng.normal(0, 0.2, n), 6)
    street = np.array(_STREETS, dtype=object)[rng.integers(0, len(_STREETS), n)]
    address = pd.Series(rng.integers(1, 9999, n)).astype(str) + " " + pd.Series(street) + " Street"
    postal = pd.Series(rng.integers(10000, 99999, n)).astype(str)
    traffic = np.array(list(_TRAFFIC), dtype=object)[_choice(rng, tuple(_TRAFFIC.values()), n)]
    created = _START_US + (rng.random(n) * (_LAST_SIGNUP_US - _START_US)).astype(np.int64)
    table = pa.table(
        {
            "id": ids,
            "first_name": _strings(first),
            "last_name": _strings(last),
            "email": _strings(email.to_numpy(dtype=object)),
            "age": rng.integers(12, 71, n).astype(np.int64),
            "gender": _strings(gender.astype(object)),
            "state": _strings(state),
            "street_address": _strings(address.to_numpy(dtype=object)),
            "postal_code": _strings(postal.to_numpy(dtype=object)),
            "city": _strings(city),
            "country": _strings(country),
            "latitude": lat,
            "longitude": lon,
            "traffic_source": _strings(traffic),
            "created_at": _ts(created),
        }
    )
    return table, gender, created


def _milestones(
    rng: np.random.Generator, created: np.ndarray, status: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """shipped_at, delivered_at, returned_at in microseconds (-1 = NULL) given the status."""
    n = created.size
    shipped = created + (rng.random(n) * 3 * _DAY_US).astype(np.int64)
    delivered = shipped + (rng.random(n) * 5 * _DAY_US).astype(np.int64)
    returned = delivered + (rng.random(n) * 10 * _DAY_US).astype(np.int64)
    was_shipped = np.isin(status, ["Shipped", "Complete", "Returned"])
    was_delivered = np.isin(status, ["Complete", "Returned"])
    return (
        np.where(was_shipped, shipped, -1),
        np.where(was_delivered, delivered, -1),
        np.where(status == "Returned", returned, -1),
    )


def generate_tables(
    n_users: int = 100_000, seed: int = 0, products: pa.Table | None = None
) -> Tables:
    """Generate the four tables for ``n_users`` users, reproducibly from ``seed``.

    Args:
        n_users: number of users (ids 1..n_users); at least 1.
        seed: the random seed; the same seed gives the same tables.
        products: a real catalogue (see :func:`load_catalogue`); by default a generated one.
            Users buy in the department of their gender ("F" -> Women, "M" -> Men) when the
            catalogue has one, as in thelook.

    Raises:
        DataError: ``n_users`` < 1.
    """
    if n_users < 1:
        raise DataError(f"need at least one user, got {n_users}")
    rng = np.random.default_rng([seed, 0])
    catalogue = products if products is not None else generate_catalogue(seed)
    users, gender, user_created = _users(rng, n_users)

    buyers = np.flatnonzero(rng.random(n_users) < _SHARE_WITH_ORDERS)
    per_buyer = _choice(rng, _ORDERS_PER_BUYER, buyers.size) + 1
    order_user_idx = np.repeat(buyers, per_buyer)
    n_orders = order_user_idx.size
    # Orders come after sign-up: an exponential delay with a mean of 200 days, wrapped
    # around within the time the user has before _LAST_ORDER_US (a modulo, not a clamp,
    # so that late sign-ups do not pile their orders up on the last day).
    signed_up = user_created[order_user_idx]
    delay = (rng.exponential(200.0, n_orders) * _DAY_US).astype(np.int64)
    order_created = signed_up + 1 + delay % (_LAST_ORDER_US - signed_up)
    by_time = np.argsort(order_created, kind="stable")  # order ids increase with time
    order_user_idx, order_created = order_user_idx[by_time], order_created[by_time]
    order_ids = np.arange(1, n_orders + 1, dtype=np.int64)
    status = np.array(list(_STATUSES), dtype=object)[
        _choice(rng, tuple(_STATUSES.values()), n_orders)
    ]
    n_items = _choice(rng, _ITEMS_PER_ORDER, n_orders).astype(np.int64) + 1
    shipped, delivered, returned = _milestones(rng, order_created, status)
    order_gender = gender[order_user_idx].astype(object)
    orders = pa.table(
        {
            "order_id": order_ids,
            "user_id": order_user_idx.astype(np.int64) + 1,
            "status": _strings(status),
            "gender": _strings(order_gender),
            "created_at": _ts(order_created),
            "returned_at": _ts(returned),
            "shipped_at": _ts(shipped),
            "delivered_at": _ts(delivered),
            "num_of_item": n_items,
        }
    )

    item_order = np.repeat(np.arange(n_orders), n_items)
    n_total = item_order.size
    product_ids = _pick_products(rng, catalogue, order_gender[item_order])
    price_by_id = pd.Series(
        catalogue.column("retail_price").to_numpy(), index=catalogue.column("id").to_numpy()
    )
    item_created = order_created[item_order] + (rng.random(n_total) * 3_600 * _US).astype(np.int64)
    order_items = pa.table(
        {
            "id": np.arange(1, n_total + 1, dtype=np.int64),
            "order_id": order_ids[item_order],
            "user_id": orders.column("user_id").to_numpy()[item_order],
            "product_id": product_ids,
            "inventory_item_id": rng.permutation(n_total).astype(np.int64) + 1,
            "status": _strings(status[item_order]),
            "created_at": _ts(item_created),
            "shipped_at": _ts(shipped[item_order]),
            "delivered_at": _ts(delivered[item_order]),
            "returned_at": _ts(returned[item_order]),
            "sale_price": price_by_id.reindex(product_ids).to_numpy(dtype=np.float64),
        }
    )
    return Tables(users=users, orders=orders, order_items=order_items, products=catalogue)


def _pick_products(
    rng: np.random.Generator, catalogue: pa.Table, genders: np.ndarray
) -> np.ndarray:
    """One product id per item, from the department of the buyer's gender when it has one."""
    ids: np.ndarray = catalogue.column("id").to_numpy()
    if "department" in catalogue.column_names:
        department = np.asarray(catalogue.column("department").to_numpy(zero_copy_only=False))
    else:
        department = np.full(ids.size, "", dtype=object)
    chosen = ids[rng.integers(0, ids.size, genders.size)]
    for g, dept in (("F", "Women"), ("M", "Men")):
        pool = ids[department == dept]
        rows = np.flatnonzero(genders == g)
        if pool.size and rows.size:
            chosen[rows] = pool[rng.integers(0, pool.size, rows.size)]
    return chosen.astype(np.int64)


def write_tables(tables: Tables, out_dir: Path) -> dict[str, Path]:
    """Write each table as ``out_dir/<name>.parquet``; returns the paths by table name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, table in tables.as_dict().items():
        path = out_dir / f"{name}.parquet"
        pq.write_table(table, path)
        paths[name] = path
    return paths
