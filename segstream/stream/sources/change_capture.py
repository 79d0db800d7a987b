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
from typing import Any, Final

import msgspec

from segstream.errors import EventError
from segstream.stream.domain.batch import ParsedBatch, RawRecord
from segstream.stream.domain.dead_letters import dead_letter, fit_dead_letter
from segstream.stream.domain.events import Source, UnknownFields
from segstream.stream.domain.rows import ItemRow, OrderRow, ProductRefresh, ProductRow
from segstream.stream.domain.topics import Output
from segstream.stream.sources.debezium import (
    ChangeTopics,
    Decoded,
    decode_change,
    user_change_key,
)
from segstream.stream.state.products import ProductCatalogue

__all__ = ["ROUTED", "ChangeBatch", "ChangeCapture", "decode_routed", "encode_routed"]

ROUTED: Final = OrderRow | ItemRow | ProductRefresh
"""What the internal topic carries."""

_ROUTED_DECODER: Final = msgspec.json.Decoder(ROUTED)


def encode_routed(change: OrderRow | ItemRow | ProductRefresh) -> Output:
    """Nothing but the record for ``topic``: its key and value; the topic is filled in later."""
    return Output("", user_change_key(change.user_id), msgspec.json.encode(change))


def decode_routed(raw: bytes | None, key: bytes | None) -> OrderRow | ItemRow | ProductRefresh:
    """A record of the internal topic -> its change.

    Raises:
        EventError: ``bad_envelope`` (not a routed change) or ``key_mismatch``.
    """
    if raw is None:
        raise EventError("bad_envelope", "a routed change has no value")
    try:
        change = _ROUTED_DECODER.decode(raw)
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


def _headers(record: RawRecord) -> list[tuple[str, bytes]]:
    headers = record.headers
    if not headers:
        return []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


class ChangeCapture:
    """Debezium's change topics (and the internal one) as the worker's input."""

    name = "cdc"

    def __init__(
        self, topics: ChangeTopics, dead_letters: str, catalogue: ProductCatalogue | None
    ) -> None:
        """Read ``topics``; reject to ``dead_letters``; ``catalogue`` is needed by
        :meth:`prepare` only (``None``: decoding alone, e.g. in unit tests)."""
        self.topics = topics
        self.dead_letters = dead_letters
        self.catalogue = catalogue
        self.table_of = {
            topics.users: "users",
            topics.orders: "orders",
            topics.order_items: "order_items",
            topics.products: "products",
        }

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.topics.inputs

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
        batch = ChangeBatch({}, [], [], [], [])
        for record in records:
            try:
                decoded = self._decode(record)
            except EventError as exc:
                letter = dead_letter(
                    self.dead_letters,
                    exc,
                    source_topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                    value=record.value,
                    headers=_headers(record),
                )
                if max_bytes is not None:
                    fitted = fit_dead_letter(letter, max_bytes)
                    if fitted is not letter:
                        batch.truncated.append(fitted)
                        letter = fitted
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
            for moved in decoded.routed:
                batch.routed.append(self._routed(moved))  # type: ignore[arg-type]
        return batch

    def _routed(self, change: OrderRow | ItemRow | ProductRefresh) -> Output:
        record = encode_routed(change)
        return Output(self.topics.routed, record.key, record.value)

    async def prepare(self, parsed: ParsedBatch) -> list[Output]:
        """Store product changes and route their re-derivations; fill in the items' products.

        Raises redis-py's errors (the caller retries: every step is idempotent).
        """
        if self.catalogue is None:
            raise RuntimeError("ChangeCapture.prepare needs a product catalogue")
        catalogue = self.catalogue
        outputs: list[Output] = []
        if isinstance(parsed, ChangeBatch):
            outputs += parsed.routed
            if parsed.products:
                await catalogue.store(row for _, row in parsed.products)
                buyers = await catalogue.buyers(row.product_id for _, row in parsed.products)
                for _, row in parsed.products:
                    for user_id in buyers[row.product_id]:
                        refresh = ProductRefresh(user_id, row.product_id, row.created_at)
                        outputs.append(self._routed(refresh))
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
            return outputs
        # Buyers first, then values: see state/products.py for why this order.
        await catalogue.add_buyers(bought)
        values = await catalogue.values(wanted)
        for changes in parsed.by_user.values():
            for index, (source, change) in enumerate(changes):
                if isinstance(change, ItemRow | ProductRefresh) and (
                    not isinstance(change, ItemRow) or change.present
                ):
                    brand, category = values[change.product_id]
                    filled: Any = msgspec.structs.replace(change, brand=brand, category=category)
                    changes[index] = (source, filled)
        return outputs
