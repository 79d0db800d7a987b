"""A live, seeded mix of what a shop does to its database, for change data capture to follow.

Each step is one transaction of one kind (weights in :data:`MIX`):

========================  =====================================================================
``new_user``              a user signs up (thelook's columns, the generator's vocabularies)
``new_order``             a user orders 1 to 4 products (orders + order_items rows)
``extra_line``            a line added to an existing order
``delete_line``           a line removed from an order
``move_order``            an order moved to another user: ``orders.user_id`` and its
                          lines' ``order_items.user_id`` updated together
``profile_edit``          a user's age, country or traffic source corrected
``delete_user``           a user leaves: their lines, orders and the user row deleted
``product_fix``           a product's brand or category corrected
========================  =====================================================================

The choice of kind and of rows comes from ``numpy.random.default_rng(seed)`` only, and rows
are picked by id ranges (``WHERE id >= x ORDER BY id LIMIT 1``), so the same seed over the
same database makes the same changes. New ids continue from the tables' maxima.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segstream.errors import DataError

__all__ = ["MIX", "Shop", "Step"]

MIX: dict[str, float] = {
    "new_user": 0.12,
    "new_order": 0.30,
    "extra_line": 0.14,
    "delete_line": 0.10,
    "move_order": 0.08,
    "profile_edit": 0.14,
    "delete_user": 0.04,
    "product_fix": 0.08,
}
"""Relative frequency of each kind of change."""

_COUNTRIES = ("China", "United States", "Brasil", "South Korea", "France", "Japan", "Spain")
_TRAFFIC = ("Search", "Organic", "Facebook", "Email", "Display")
_CATEGORIES = ("Jeans", "Tops & Tees", "Sweaters", "Accessories", "Shorts", "Outerwear & Coats")
_BRANDS = ("Corrected Co", "Allegra K", "Calvin Klein", "Carhartt", "Levi's", "Émile & Zoé")
_STATUSES = ("Processing", "Shipped", "Complete")


@dataclass(frozen=True)
class Step:
    """One change made: its kind and a line for a person (``order 812 moved 41 -> 97``)."""

    kind: str
    detail: str


@dataclass
class Shop:
    """The mutation mix over a psycopg connection ``conn`` to the shop's database.

    ``schema`` holds the four thelook tables (``segstream generate --db`` makes them).
    """

    conn: Any
    seed: int = 0
    schema: str = "public"
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng([self.seed, 20])
        self._kinds = list(MIX)
        weights = np.array(list(MIX.values()))
        self._p = weights / weights.sum()
        self.conn.execute(f'SET search_path TO "{self.schema}"')
        self.conn.commit()
        self._next = {
            "users": self._max("users", "id"),
            "orders": self._max("orders", "order_id"),
            "order_items": self._max("order_items", "id"),
        }
        self._products = self._max("products", "id")
        if self._products == 0:
            raise DataError(f"the products table in schema {self.schema} is empty")

    def _max(self, table: str, column: str) -> int:
        import psycopg

        try:
            row = self.conn.execute(f"SELECT coalesce(max({column}), 0) FROM {table}").fetchone()
        except psycopg.Error as exc:
            self.conn.rollback()
            raise DataError(
                f"the database has no {table} table in schema {self.schema}: run "
                f"`segstream generate --db URL` first ({exc})"
            ) from exc
        return int(row[0])

    def _new_id(self, table: str) -> int:
        self._next[table] += 1
        return self._next[table]

    def _pick(self, table: str, column: str) -> int | None:
        """An existing row's id, found from a random point of the id range (None: no rows)."""
        top = self._next.get(table, self._products)
        start = int(self.rng.integers(1, max(top, 1) + 1))
        first = f"SELECT {column} FROM {table} WHERE {column} >= %s ORDER BY {column} LIMIT 1"
        row = self.conn.execute(first, (start,)).fetchone()
        if row is None:  # past the last row: wrap around to the first
            row = self.conn.execute(first, (0,)).fetchone()
        return None if row is None else int(row[0])

    def step(self) -> Step:
        """Make one change of a kind drawn from :data:`MIX`, in one transaction.

        A kind that finds nothing to change (no order to move) is counted as ``skipped``.
        """
        return self.make(self._kinds[int(self.rng.choice(len(self._kinds), p=self._p))])

    def make(self, kind: str) -> Step:
        """Make one change of ``kind`` (a key of :data:`MIX`), in one transaction.

        Raises:
            DataError: ``kind`` is not a kind of change.
        """
        if kind not in MIX:
            raise DataError(f"no kind of change {kind!r}: one of {', '.join(MIX)}")
        action: Callable[[], str | None] = getattr(self, f"_{kind}")
        with self.conn.transaction():
            detail = action()
        if detail is None:
            self.counts["skipped"] += 1
            return Step("skipped", f"{kind}: nothing to change")
        self.counts[kind] += 1
        return Step(kind, detail)

    def run(
        self,
        rate: float,
        *,
        duration_s: float | None = None,
        steps: int | None = None,
        report: Callable[[Step], None] | None = None,
        stop: Callable[[], bool] = lambda: False,
    ) -> Counter[str]:
        """Make ``rate`` changes a second until ``duration_s`` passed, ``steps`` were made or
        ``stop()`` is true; each goes to ``report``. Returns the counts by kind."""
        started = time.monotonic()
        made = 0
        while not stop():
            if steps is not None and made >= steps:
                break
            if duration_s is not None and time.monotonic() - started >= duration_s:
                break
            step = self.step()
            made += 1
            if report is not None:
                report(step)
            # Paced against the start, so a slow step is caught up rather than accumulated.
            delay = started + made / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return self.counts

    # --- the kinds ------------------------------------------------------------------------

    def _new_user(self) -> str:
        user = self._new_id("users")
        gender = "F" if self.rng.random() < 0.5 else "M"
        self.conn.execute(
            "INSERT INTO users (id, first_name, last_name, email, age, gender, country, "
            "traffic_source, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())",
            (
                user,
                "Ada" if gender == "F" else "Alan",
                "Shopper",
                f"shopper{user}@example.com",
                int(self.rng.integers(12, 71)),
                gender,
                _COUNTRIES[int(self.rng.integers(len(_COUNTRIES)))],
                _TRAFFIC[int(self.rng.integers(len(_TRAFFIC)))],
            ),
        )
        return f"user {user} signed up"

    def _add_lines(self, order: int, user: int, n: int) -> list[int]:
        lines = []
        for _ in range(n):
            line = self._new_id("order_items")
            product = self._pick("products", "id")
            self.conn.execute(
                "INSERT INTO order_items (id, order_id, user_id, product_id, status, "
                "created_at, sale_price) SELECT %s, %s, %s, p.id, 'Processing', now(), "
                "p.retail_price FROM products p WHERE p.id = %s",
                (line, order, user, product),
            )
            lines.append(line)
        return lines

    def _new_order(self) -> str | None:
        user = self._pick("users", "id")
        if user is None:
            return None
        order = self._new_id("orders")
        n = int(self.rng.integers(1, 5))
        self.conn.execute(
            "INSERT INTO orders (order_id, user_id, status, gender, created_at, num_of_item) "
            "SELECT %s, u.id, %s, u.gender, now(), %s FROM users u WHERE u.id = %s",
            (order, _STATUSES[int(self.rng.integers(len(_STATUSES)))], n, user),
        )
        self._add_lines(order, user, n)
        return f"order {order} of user {user} with {n} line(s)"

    def _extra_line(self) -> str | None:
        order = self._pick("orders", "order_id")
        if order is None:
            return None
        (user,) = self.conn.execute(
            "SELECT user_id FROM orders WHERE order_id = %s", (order,)
        ).fetchone()
        (line,) = self._add_lines(order, user, 1)
        self.conn.execute(
            "UPDATE orders SET num_of_item = num_of_item + 1 WHERE order_id = %s", (order,)
        )
        return f"line {line} added to order {order} of user {user}"

    def _delete_line(self) -> str | None:
        line = self._pick("order_items", "id")
        if line is None:
            return None
        order, user = self.conn.execute(
            "DELETE FROM order_items WHERE id = %s RETURNING order_id, user_id", (line,)
        ).fetchone()
        self.conn.execute(
            "UPDATE orders SET num_of_item = greatest(num_of_item - 1, 0) WHERE order_id = %s",
            (order,),
        )
        return f"line {line} removed from order {order} of user {user}"

    def _move_order(self) -> str | None:
        order = self._pick("orders", "order_id")
        target = self._pick("users", "id")
        if order is None or target is None:
            return None
        (source,) = self.conn.execute(
            "SELECT user_id FROM orders WHERE order_id = %s", (order,)
        ).fetchone()
        if source == target:
            return None
        self.conn.execute("UPDATE orders SET user_id = %s WHERE order_id = %s", (target, order))
        self.conn.execute(
            "UPDATE order_items SET user_id = %s WHERE order_id = %s", (target, order)
        )
        return f"order {order} moved from user {source} to user {target}"

    def _profile_edit(self) -> str | None:
        user = self._pick("users", "id")
        if user is None:
            return None
        what = int(self.rng.integers(3))
        column, value = [
            ("age", int(self.rng.integers(12, 71))),
            ("country", _COUNTRIES[int(self.rng.integers(len(_COUNTRIES)))]),
            ("traffic_source", _TRAFFIC[int(self.rng.integers(len(_TRAFFIC)))]),
        ][what]
        self.conn.execute(f"UPDATE users SET {column} = %s WHERE id = %s", (value, user))
        return f"user {user}: {column} = {value}"

    def _delete_user(self) -> str | None:
        user = self._pick("users", "id")
        if user is None:
            return None
        lines = self.conn.execute("DELETE FROM order_items WHERE user_id = %s", (user,)).rowcount
        orders = self.conn.execute("DELETE FROM orders WHERE user_id = %s", (user,)).rowcount
        self.conn.execute("DELETE FROM users WHERE id = %s", (user,))
        return f"user {user} deleted with {orders} order(s) and {lines} line(s)"

    def _product_fix(self) -> str:
        product = self._pick("products", "id")
        if self.rng.random() < 0.5:
            column, value = "brand", _BRANDS[int(self.rng.integers(len(_BRANDS)))]
        else:
            column, value = "category", _CATEGORIES[int(self.rng.integers(len(_CATEGORIES)))]
        self.conn.execute(f"UPDATE products SET {column} = %s WHERE id = %s", (value, product))
        return f"product {product}: {column} = {value}"
