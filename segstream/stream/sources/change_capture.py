"""The change data capture source: Debezium's change events of the shop's PostgreSQL tables.

:func:`~segstream.stream.sources.debezium.decode_change` reads each record; this source groups
the row changes by user, dead-letters what it cannot use, and does the I/O row changes need
before they are applied (:meth:`ChangeCapture.prepare`):

- a ``products`` change is stored in the catalogue (:mod:`segstream.stream.state.products`)
  and fans out: one :class:`~segstream.stream.domain.rows.ProductRefresh` per buyer on the
  internal topic (``SEGSTREAM_TOPIC_REDERIVE``), keyed like the change topics so that it
  lands on the partition whose worker owns the buyer;
- a row moved away from a user is routed the same way to that user's owner;
- each item row and refresh gets its product's current brand and category.

A record of the internal topic is a routed change as JSON (msgspec's tagged encoding of
:data:`ROUTED`). Its key is the user's, so it is ordered with nothing else of the user: a
refresh re-reads the catalogue whenever it is applied, and a routed retraction removes a row
by identity; both are idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, cast

import msgspec

from segstream.errors import EventError
from segstream.stream.domain.batch import ParsedBatch, RawRecord
from segstream.stream.domain.dead_letters import reject_record
from segstream.stream.domain.events import Source, UnknownFields
from segstream.stream.domain.rows import (
    ItemRow,
    OrderRow,
    ProductRefresh,
    ProductRow,
    TableTruncated,
    Truncate,
)
from segstream.stream.domain.topics import Output
from segstream.stream.sources.debezium import (
    ChangeTopics,
    Decoded,
    decode_change,
    user_change_key,
)
from segstream.stream.state.products import ProductCatalogue
from segstream.stream.state.truncations import Truncations

__all__ = ["ROUTED", "ChangeBatch", "ChangeCapture", "decode_routed", "encode_routed"]

ROUTED: Final = OrderRow | ItemRow | ProductRefresh | TableTruncated
"""What the internal topic carries."""

_ROUTED_DECODER: Final = msgspec.json.Decoder(ROUTED)


Routed = OrderRow | ItemRow | ProductRefresh | TableTruncated


def encode_routed(change: Routed) -> Output:
    """Nothing but the record for ``topic``: its key and value; the topic is filled in later."""
    return Output("", user_change_key(change.user_id), msgspec.json.encode(change))


def decode_routed(raw: bytes | None, key: bytes | None) -> Routed:
    """A record of the internal topic -> its change.

    Raises:
        EventError: ``bad_envelope`` (not a routed change) or ``key_mismatch``.
    """
    if raw is None:
        raise EventError("bad_envelope", "a routed change has no value")
    try:
        change = cast(Routed, _ROUTED_DECODER.decode(raw))
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise EventError("bad_envelope", f"not a routed change: {exc}"[:200]) from None
    if key != user_change_key(change.user_id):
        raise EventError("key_mismatch", f"key {key!r} but user_id {change.user_id}"[:200])
    return change


@dataclass(frozen=True, slots=True)
class ChangeBatch(ParsedBatch):
    """A parsed batch of change events, with what belongs to no one user of it."""

    products: list[tuple[Source, ProductRow]] = field(default_factory=list)
    """The batch's ``products`` changes, in arrival order."""
    routed: list[Output] = field(default_factory=list)
    """Changes of users this batch moved rows away from, for their owners."""
    truncates: list[Truncate] = field(default_factory=list)
    """The batch's ``TRUNCATE`` events, in arrival order."""
    marks: dict[str, int] = field(default_factory=dict)
    """The truncate marks (table -> log position) the batch's rows were filtered with."""


class ChangeCapture:
    """Debezium's change topics (and the internal one) as the worker's input."""

    name = "cdc"

    def __init__(
        self,
        topics: ChangeTopics,
        dead_letters: str,
        catalogue: ProductCatalogue | None,
        truncations: Truncations | None = None,
    ) -> None:
        """Read ``topics``; reject to ``dead_letters``; ``catalogue`` and ``truncations`` are
        needed by :meth:`prepare` only (``None``: decoding alone, e.g. in unit tests)."""
        self.topics = topics
        self.dead_letters = dead_letters
        self.catalogue = catalogue
        self.truncations = truncations
        self.table_of = {
            topics.users: "users",
            topics.orders: "orders",
            topics.order_items: "order_items",
            topics.products: "products",
        }

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.topics.inputs

    @property
    def user_keyed(self) -> tuple[str, ...]:
        """Every input topic but products' (keyed by product: any partition will do)."""
        return tuple(topic for topic in self.topics.inputs if topic != self.topics.products)

    def _decode(self, record: RawRecord) -> Decoded | None:
        if record.topic == self.topics.routed:
            return Decoded([decode_routed(record.value, record.key)])
        if record.value is None:  # the tombstone after a delete: nothing to apply
            return None
        return decode_change(self.table_of, record.topic, record.key, record.value)

    def parse(
        self,
        records: Sequence[RawRecord],
        unknown_fields: UnknownFields = "ignore",
        *,
        max_bytes: int | None = None,
    ) -> ChangeBatch:
        """Records -> changes by user, product rows, routed records, dead letters.

        ``unknown_fields`` does not apply: a row carries every column of its table.
        """
        # by_user, dead_letters, reasons, unknown, truncated; our own lists default empty
        batch = ChangeBatch({}, [], [], [], [])
        for record in records:
            try:
                decoded = self._decode(record)
            except EventError as exc:
                letter, cut = reject_record(self.dead_letters, record, exc, max_bytes)
                if cut:
                    batch.truncated.append(letter)
                batch.reasons.append(exc.reason)
                batch.dead_letters.append(letter)
                continue
            if decoded is None:
                continue
            source = Source(record.topic, record.partition, record.offset)
            for change in decoded.changes:
                batch.by_user.setdefault(change.user_id, []).append((source, change))  # type: ignore[arg-type]
            if decoded.product is not None:
                batch.products.append((source, decoded.product))
            if decoded.truncate is not None:
                batch.truncates.append(decoded.truncate)
            for moved in decoded.routed:
                batch.routed.append(self._routed(moved))  # type: ignore[arg-type]
        return batch

    def _routed(self, change: Routed) -> Output:
        record = encode_routed(change)
        return Output(self.topics.routed, record.key, record.value)

    async def prepare(self, parsed: ParsedBatch) -> list[Output]:
        """Truncates and product changes stored and fanned out; rows older than a truncate
        dropped; the items' products filled in.

        Raises redis-py's errors (the caller retries: every step is idempotent).
        """
        if self.catalogue is None or self.truncations is None:
            raise RuntimeError("ChangeCapture.prepare needs a product catalogue and truncations")
        outputs: list[Output] = []
        if isinstance(parsed, ChangeBatch):
            outputs += parsed.routed
            outputs += await self._truncate(parsed.truncates)
            marks = await self.truncations.marks()
            parsed.marks.clear()
            parsed.marks.update(marks)
            outputs += await self._store_products(parsed.products, marks.get("products", 0))
            _drop_truncated(parsed.by_user, marks)
        await self._fill_products(parsed)
        return outputs

    async def after_apply(self, parsed: ParsedBatch) -> list[Output]:
        """Route a truncate recorded while this batch was applied to the batch's users (see
        :mod:`segstream.stream.state.truncations`): usually nothing, one HKEYS."""
        if not isinstance(parsed, ChangeBatch) or not parsed.by_user or self.truncations is None:
            return []
        now = await self.truncations.marks()
        outputs = []
        at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for table in ("orders", "order_items"):
            lsn = now.get(table, 0)
            if lsn > parsed.marks.get(table, 0):
                for user_id in parsed.by_user:
                    moved = TableTruncated(user_id, table, lsn, at)
                    outputs.append(self._routed(moved))
        return outputs

    async def _truncate(self, truncates: list[Truncate]) -> list[Output]:
        """Record each truncate, then route it to every user it reaches."""
        assert self.truncations is not None and self.catalogue is not None
        outputs: list[Output] = []
        for truncate in truncates:
            await self.truncations.record(truncate.table, truncate.lsn)
            if truncate.table == "products":
                gone = await self.catalogue.truncate(truncate.lsn)
                buyers = await self.catalogue.buyers(gone)
                for product_id, users in buyers.items():
                    for user_id in users:
                        refresh = ProductRefresh(user_id, product_id, truncate.created_at)
                        outputs.append(self._routed(refresh))
                continue
            async for user_id in self.truncations.users():
                moved = TableTruncated(user_id, truncate.table, truncate.lsn, truncate.created_at)
                outputs.append(self._routed(moved))
        return outputs

    async def _store_products(
        self, products: list[tuple[Source, ProductRow]], truncated_at: int
    ) -> list[Output]:
        """Store the product changes newer than the last products truncate; route one
        re-derivation per buyer of each."""
        assert self.catalogue is not None
        rows = [row for _, row in products if row.lsn >= truncated_at]
        if not rows:
            return []
        await self.catalogue.store(rows)
        buyers = await self.catalogue.buyers(row.product_id for row in rows)
        return [
            self._routed(ProductRefresh(user_id, row.product_id, row.created_at))
            for row in rows
            for user_id in buyers[row.product_id]
        ]

    async def _fill_products(self, parsed: ParsedBatch) -> None:
        """Each present item and each refresh gets its product's current brand and category."""
        assert self.catalogue is not None
        bought: dict[int, set[int]] = {}
        wanted: list[int] = []
        for user_id, changes in parsed.by_user.items():
            for _, change in changes:
                if isinstance(change, ItemRow) and change.present:
                    bought.setdefault(change.product_id, set()).add(user_id)
                    wanted.append(change.product_id)
                elif isinstance(change, ProductRefresh):
                    wanted.append(change.product_id)
        if not wanted:
            return
        # Buyers first, then values: see state/products.py for why this order.
        await self.catalogue.add_buyers(bought)
        values = await self.catalogue.values(wanted)
        for changes in parsed.by_user.values():
            for index, (source, change) in enumerate(changes):
                if isinstance(change, ItemRow | ProductRefresh) and (
                    not isinstance(change, ItemRow) or change.present
                ):
                    brand, category = values[change.product_id]
                    filled: Any = msgspec.structs.replace(change, brand=brand, category=category)
                    changes[index] = (source, filled)


def _drop_truncated(by_user: dict[int, list[tuple[Source, Any]]], marks: dict[str, int]) -> None:
    """Drop the row changes older than their table's last truncate (in place); a user left
    with none is removed (nothing to apply, nothing to settle)."""
    if not marks.get("orders") and not marks.get("order_items"):
        return
    for user_id in list(by_user):
        kept = [
            (source, change)
            for source, change in by_user[user_id]
            if not (
                isinstance(change, OrderRow | ItemRow)
                and change.lsn
                < marks.get("orders" if isinstance(change, OrderRow) else "order_items", 0)
            )
        ]
        if kept:
            by_user[user_id][:] = kept
        else:
            del by_user[user_id]
