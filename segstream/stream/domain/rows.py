"""Row changes: the domain changes of a source that sees the shop's tables row by row.

Segstream's own JSON events only ever add (a profile replaced whole, an order with its items
counted once). A change data capture source sees the tables themselves, so a row can also
change or disappear; these records say so, one row at a time, and ``state/lua/apply.lua``
keeps each user's features equal to what ``training/features.sql`` computes over the rows
that exist now (docs/cdc.md, "Each change kind's effect"):

- :class:`OrderRow`: an ``orders`` row of the user exists (``present``) or no longer does.
  ``total_orders`` is the number of the user's present order rows.
- :class:`ItemRow`: an ``order_items`` row routed to the user exists or no longer does. It
  counts toward the brand and category only while the user also has its order's row (an
  item belongs to the user of its order); until then it is *held*. Its brand and category
  are its product's, filled in by the worker from the product catalogue
  (:mod:`segstream.stream.state.products`) before the row is applied.
- :class:`TableTruncated`: the ``orders`` or ``order_items`` table was truncated: the user's
  rows of it older than the truncate (by log position) are gone.
- :class:`ProductRefresh`: re-read the product's brand and category for every item of the
  user that names it (a product was created or corrected after the user's items arrived).

Every record is idempotent by row identity and content: applying one twice, or re-applying
a row's changes in their order, leaves the state as once. A profile is the
:class:`~segstream.stream.domain.events.UserEvent` of the JSON source, which already replaces
the profile whole.
"""

from __future__ import annotations

from typing import Final

import msgspec

from segstream.stream.domain.events import Event
from segstream.training.inputs import RULES

__all__ = [
    "MISSING",
    "Change",
    "ItemRow",
    "OrderRow",
    "ProductRefresh",
    "ProductRow",
    "TableTruncated",
    "Truncate",
]

_ID = RULES["user_id"].msgspec_type()

MISSING: Final = ""
"""A brand or category that is missing (SQL NULL or ``""``), or a product not in the catalogue:
never counted, as in the SQL's inner join with ``products``."""


class OrderRow(msgspec.Struct, frozen=True, tag=True):
    """An ``orders`` row of ``user_id``: present (created, updated, read) or deleted."""

    order_id: int
    user_id: int
    present: bool
    created_at: str
    """RFC 3339: when the database committed the change (the change's occurred_at)."""
    lsn: int = 0
    """The change's position in the database's log (PostgreSQL's LSN, Debezium's
    ``source.lsn``): what a truncate compares rows with."""


class ItemRow(msgspec.Struct, frozen=True, tag=True):
    """An ``order_items`` row routed to ``user_id``: present or deleted.

    ``brand`` and ``category`` are :data:`MISSING` until the worker fills them in from the
    product catalogue; a deleted row needs neither.
    """

    item_id: int
    order_id: int
    user_id: int
    product_id: int
    present: bool
    created_at: str
    brand: str = MISSING
    category: str = MISSING
    lsn: int = 0
    """The change's position in the database's log (see :class:`OrderRow`)."""


class ProductRefresh(msgspec.Struct, frozen=True, tag=True):
    """Re-derive ``user_id``'s items of ``product_id`` with the product's current values."""

    user_id: int
    product_id: int
    created_at: str
    brand: str = MISSING
    category: str = MISSING


class ProductRow(msgspec.Struct, frozen=True):
    """A ``products`` row: its brand and category (:data:`MISSING` when null or empty), or
    deleted (``present`` false). Global, not a user's: kept in the product catalogue."""

    product_id: int
    present: bool
    brand: str
    category: str
    created_at: str
    lsn: int = 0
    """The change's position in the database's log (see :class:`OrderRow`)."""


class TableTruncated(msgspec.Struct, frozen=True, tag=True):
    """``table`` (``orders`` or ``order_items``) was truncated at log position ``lsn``: the
    user's rows of it written before then are gone."""

    user_id: int
    table: str
    lsn: int
    created_at: str


class Truncate(msgspec.Struct, frozen=True):
    """A ``TRUNCATE`` of ``table`` at log position ``lsn``: global, fanned out to the users."""

    table: str
    lsn: int
    created_at: str


Change = Event | OrderRow | ItemRow | ProductRefresh | TableTruncated
"""Anything a source hands the worker for one user, in that user's order."""
