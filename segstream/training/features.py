"""The feature definitions: the one source of truth shared by the batch SQL and the stream.

A user's feature row (one per user who has at least one order):

=======================  =========  ==========================================================
column                   kind       definition
=======================  =========  ==========================================================
age                      numeric    ``users.age``, whole years
gender                   category   ``users.gender``
country                  category   ``users.country``
traffic_source           category   ``users.traffic_source``
total_orders             numeric    number of distinct ``order_id`` of the user in ``orders``,
                                    whatever the order's status (cancelled and returned count)
most_frequent_brand      category   the brand with the most order items among the user's
                                    orders; ties broken by the alphabetically first brand
most_frequent_category   category   the same rule over ``products.category``
=======================  =========  ==========================================================

Exact semantics, implemented by ``features.sql`` (DuckDB and PostgreSQL) and by
:func:`most_frequent` (Python, for the stream), which must all agree:

- An order item belongs to the user of its order (``order_items.order_id`` joined to
  ``orders.order_id``); every ``order_items`` row is one item, whatever its status. Items whose
  product is not in ``products`` are not counted.
- *Missing* means SQL NULL or the empty string ``""``. A missing brand or category is not
  counted at all: a user whose items all lack a brand has no most frequent brand.
- *Alphabetically first* means the smallest string in Unicode code point order, which is the
  byte order of UTF-8: case-sensitive (``"B" < "a"``), no locale, accents after ASCII. Python
  compares ``str`` this way; DuckDB's default collation does; PostgreSQL does with
  ``COLLATE "C"``, which the SQL spells out; SQLite does with ``BINARY``, which
  :func:`feature_sql` puts in its place for SQLite (:data:`CODE_POINT_COLLATIONS`).
- Users without orders are excluded; rows with any missing feature are dropped; one row per
  user, ordered by ``user_id``. ``user_id`` identifies the row and is never a feature.
  :func:`exclusion_sql` counts the users left out and why, with the same SQL (the CTEs
  ``user_features`` and ``segmented`` of ``features.sql``), as :class:`Exclusions`.

The order of :data:`FEATURE_COLUMNS` is the model's column order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources

from segstream.errors import DataError

__all__ = [
    "CATEGORICAL_COLUMNS",
    "CODE_POINT_COLLATIONS",
    "EXCLUSION_REASONS",
    "FEATURE_COLUMNS",
    "ID_COLUMN",
    "NUMERIC_COLUMNS",
    "Exclusions",
    "clean_category",
    "exclusion_sql",
    "feature_sql",
    "most_frequent",
]

ID_COLUMN = "user_id"
"""Column naming the user in feature frames; an identifier, never a feature."""

FEATURE_COLUMNS: tuple[str, ...] = (
    "age",
    "gender",
    "country",
    "traffic_source",
    "total_orders",
    "most_frequent_brand",
    "most_frequent_category",
)
"""The model's input columns, in the model's column order."""

NUMERIC_COLUMNS: tuple[str, ...] = ("age", "total_orders")
"""Columns used as numbers (whole numbers in practice)."""

CATEGORICAL_COLUMNS: tuple[str, ...] = (
    "gender",
    "country",
    "traffic_source",
    "most_frequent_brand",
    "most_frequent_category",
)
"""Columns label-encoded with the vocabulary fitted at training time."""

_SQL_FILE = "features.sql"
_FINAL_SELECT = "-- final SELECT"
"""The line of ``features.sql`` after which its CTEs are used; :func:`exclusion_sql` cuts there."""

EXCLUSION_REASONS: Mapping[str, str] = {
    "age": "no age",
    "gender": "no gender",
    "country": "no country",
    "traffic_source": "no traffic source",
    "most_frequent_brand": "no item with a known brand",
    "most_frequent_category": "no item with a known category",
}
"""Why a user with orders is left out, per feature column that can be missing for them."""


def clean_category(value: object) -> str | None:
    """A categorical value as the SQL sees it: ``None`` for missing (None, NaN or ``""``).

    Any other value is returned as ``str(value)`` unchanged (no trimming, no case folding).
    """
    if value is None or value == "":
        return None
    if isinstance(value, float) and value != value:  # NaN: pandas' missing marker
        return None
    return str(value)


def most_frequent(counts: Mapping[str, int]) -> str | None:
    """The value with the highest count; ties go to the alphabetically first value.

    Args:
        counts: value -> number of order items carrying it. Missing values (``None``,
            ``""``) and non-positive counts are ignored, as the SQL never counts them.

    Returns:
        The winning value, or ``None`` when nothing is left to count. "Alphabetically first"
        is Unicode code point order (Python's ``str`` order), the same as the SQL's
        ``COLLATE "C"`` over UTF-8.
    """
    best: str | None = None
    best_count = 0
    for value, count in counts.items():
        if value is None or value == "" or count <= 0:
            continue
        if count > best_count or (count == best_count and best is not None and value < best):
            best, best_count = value, count
    return best


CODE_POINT_COLLATIONS: Mapping[str, str] = {
    "duckdb": '"C"',
    "postgresql": '"C"',
    "sqlite": "BINARY",
}
"""Per SQL dialect (SQLAlchemy's backend name, or ``duckdb``), the collation that orders
strings by Unicode code point, as the tie rule requires. PostgreSQL's ``"C"`` compares bytes
whatever the database's locale; DuckDB's ``"C"`` is its default binary order; SQLite's
``BINARY`` compares bytes with ``memcmp`` (its default). Over UTF-8, byte order is code point
order. Other dialects are refused rather than guessed."""

_SQL_COLLATE = 'COLLATE "C" ASC'
"""How ``features.sql`` spells the tie-breaking order (for DuckDB and PostgreSQL)."""


def feature_sql(dialect: str = "duckdb") -> str:
    """The text of ``features.sql`` for ``dialect``: one query over users, orders, order_items,
    products, with that dialect's code point collation (:data:`CODE_POINT_COLLATIONS`).

    It has no bind parameters and no colons, so SQLAlchemy's ``text()`` passes it unchanged.

    Raises:
        DataError: the dialect is not one of :data:`CODE_POINT_COLLATIONS`.
    """
    collation = CODE_POINT_COLLATIONS.get(dialect)
    if collation is None:
        supported = ", ".join(sorted(CODE_POINT_COLLATIONS))
        raise DataError(
            f"{dialect} databases are not supported: the feature query needs a collation in "
            f"Unicode code point order, known for {supported} (use --data for Parquet or CSV "
            "files, read by DuckDB)"
        )
    sql = resources.files(__package__).joinpath(_SQL_FILE).read_text(encoding="utf-8")
    return sql.replace(_SQL_COLLATE, f"COLLATE {collation} ASC")


@dataclass(frozen=True)
class Exclusions:
    """Who the feature query leaves out of a data source, and why (counts of users).

    ``users``: rows of ``users``; ``segmented``: users the feature query returns;
    ``no_orders``: users without any order; ``missing[c]``: users *with* orders whose feature
    ``c`` (a key of :data:`EXCLUSION_REASONS`) is missing. A user can miss several features,
    so ``missing`` may add up to more than :attr:`missing_features`. ``refused``: of the
    ``segmented`` users, those left out after the query because a value breaks the input
    table's rules (``"<field> <reason>"`` -> users, one key per user), with an example message
    per key in ``refused_examples``.
    """

    users: int
    segmented: int
    no_orders: int
    missing: Mapping[str, int]
    refused: Mapping[str, int] = field(default_factory=dict)
    refused_examples: Mapping[str, str] = field(default_factory=dict)

    @property
    def refused_total(self) -> int:
        """Users the input rules left out after the feature query."""
        return sum(self.refused.values())

    @property
    def excluded(self) -> int:
        """Users the feature query leaves out."""
        return self.users - self.segmented

    @property
    def missing_features(self) -> int:
        """Users with orders left out for a missing feature (one or more)."""
        return self.excluded - self.no_orders

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict, read back by :meth:`from_json`."""
        return {
            "users": self.users,
            "segmented": self.segmented,
            "no_orders": self.no_orders,
            "missing": dict(self.missing),
            "refused": dict(self.refused),
            "refused_examples": dict(self.refused_examples),
        }

    @classmethod
    def from_json(cls, value: object) -> Exclusions | None:
        """The counts :meth:`to_json` wrote; ``None`` when ``value`` is not such a dict."""
        if not isinstance(value, dict):
            return None
        counts = [value.get(name) for name in ("users", "segmented", "no_orders")]
        missing = value.get("missing")
        if not all(type(n) is int for n in counts) or not isinstance(missing, dict):
            return None
        if not all(type(missing.get(c)) is int for c in EXCLUSION_REASONS):
            return None
        users, segmented, no_orders = (int(n) for n in counts)  # type: ignore[arg-type]
        refused = value.get("refused", {})  # absent: a version from before the input rules
        examples = value.get("refused_examples", {})
        if not isinstance(refused, dict) or not all(type(n) is int for n in refused.values()):
            return None
        if not isinstance(examples, dict):
            return None
        missing_counts = {c: int(missing[c]) for c in EXCLUSION_REASONS}
        return cls(users, segmented, no_orders, missing_counts, refused, examples)


def exclusion_sql(dialect: str = "duckdb") -> str:
    """One portable query counting who :func:`feature_sql` leaves out: one row, int columns.

    Columns ``users``, ``segmented``, ``no_orders`` and ``missing_<column>`` for each key of
    :data:`EXCLUSION_REASONS` (see :class:`Exclusions`). It is ``features.sql`` up to its
    final SELECT, so the users counted as segmented are exactly those the feature query
    returns, by the same rule.
    """
    text = feature_sql(dialect)
    if text.count(_FINAL_SELECT) != 1:
        raise AssertionError(f"{_SQL_FILE} must hold the line {_FINAL_SELECT!r} exactly once")
    missing = ",\n".join(
        f"    COUNT(CASE WHEN total_orders IS NOT NULL AND {c} IS NULL THEN 1 END) AS missing_{c}"
        for c in EXCLUSION_REASONS
    )
    return (
        text.split(_FINAL_SELECT)[0]
        + "SELECT\n"
        + "    COUNT(*) AS users,\n"
        + "    (SELECT COUNT(*) FROM segmented) AS segmented,\n"
        + "    COUNT(CASE WHEN total_orders IS NULL THEN 1 END) AS no_orders,\n"
        + missing
        + "\nFROM user_features\n"
    )
