"""Debezium's change events of the shop's tables, read as row changes (pure decoding).

One Kafka record of a Debezium PostgreSQL connector (JSON converter, with or without the
``{"schema": .., "payload": ..}`` envelope) becomes the domain changes it means
(:mod:`segstream.stream.domain.rows`, docs/cdc.md "Each change kind's effect"):

=============  ===========================  ==================================================
table          ``op`` c / u / r             ``op`` d
=============  ===========================  ==================================================
users          the profile (``UserEvent``)  the user leaves (``UserLeft``)
orders         ``OrderRow`` present         ``OrderRow`` deleted (from ``before``)
order_items    ``ItemRow`` present          ``ItemRow`` deleted (from ``before``)
products       ``ProductRow`` (global)      ``ProductRow`` deleted
=============  ===========================  ==================================================

A ``TRUNCATE`` (``op: "t"``, no key, no row) of orders, order_items or products is a
:class:`~segstream.stream.domain.rows.Truncate` at its log position, fanned out by the source
(:mod:`segstream.stream.sources.change_capture`); one of users is refused.

An update that moves an orders or order_items row to another user (``before.user_id`` differs
from ``after.user_id``) is two changes: the row deleted for the old user, routed to that
user's owner through the internal topic (:attr:`Decoded.routed`), and the row present for the
new one. A tombstone (null value, after every delete) carries nothing and is skipped.

Anything else is refused with an :class:`~segstream.errors.EventError` whose reason says why,
for the dead-letter topic: ``not_utf8``/``not_json``/``too_large`` (the bytes),
``bad_envelope`` (not a change event: no ``op``, an unknown one, no row where the op needs
one), ``unknown_table`` (``source.table`` is none of the four), ``missing_field`` (a row
without a column segstream needs, e.g. a delete whose ``before`` holds only the primary key
because the table lacks ``REPLICA IDENTITY FULL``), ``key_mismatch`` (the key does not name
the row's user), ``unsupported_change`` (a ``TRUNCATE`` of ``users``, see docs/cdc.md), or the input
table's own reason for a value outside its rules (``out_of_range``, ``wrong_type``...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from segstream.cdc.connector import TABLES, table_topics
from segstream.errors import EventError, InputError
from segstream.settings import Settings
from segstream.stream.domain.events import MAX_EVENT_BYTES, UserEvent, UserLeft
from segstream.stream.domain.rows import (
    MISSING,
    Change,
    ItemRow,
    OrderRow,
    ProductRow,
    Truncate,
)
from segstream.training.inputs import RULES

__all__ = [
    "CDC_REASONS",
    "ChangeTopics",
    "Decoded",
    "decode_change",
    "user_change_key",
]

CDC_REASONS: Final = ("bad_envelope", "unknown_table", "unsupported_change")
"""Reason codes of change events beyond the JSON events' own (``events.REASONS``)."""

_OPS: Final = frozenset("curdt")


@dataclass(frozen=True, slots=True)
class ChangeTopics:
    """The change topics, one per table (``<cdc_topic_prefix>.<cdc_schema>.<table>``), and the
    internal topic of routed changes."""

    users: str
    orders: str
    order_items: str
    products: str
    routed: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ChangeTopics:
        topics = table_topics(settings)  # the connector's naming, one definition
        return cls(
            users=topics["users"],
            orders=topics["orders"],
            order_items=topics["order_items"],
            products=topics["products"],
            routed=settings.topic_rederive,
        )

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every topic the worker reads, the routed one last."""
        return (self.users, self.orders, self.order_items, self.products, self.routed)


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one change event means: per-user changes, a product row, changes to route."""

    changes: list[Change] = field(default_factory=list)
    """Changes of the record's user (the key's), in order."""
    product: ProductRow | None = None
    routed: list[Change] = field(default_factory=list)
    truncate: Truncate | None = None
    """A ``TRUNCATE`` of the table (a change of every user: fanned out)."""
    """Changes of another user (a row moved away from them): sent to that user's owner."""


def user_change_key(user_id: int) -> bytes:
    """The key bytes of every change of ``user_id`` on the user-keyed topics (docs/cdc.md)."""
    return b'{"user_id":%d}' % user_id


def _check(name: str, value: object, column: str | None = None) -> Any:
    """``value`` checked by the input table's rule ``name``; its words, our reason."""
    try:
        return RULES[name].check(value, column or name)
    except InputError as exc:
        raise EventError(exc.reason, exc.message) from None


def _json(raw: bytes, what: str) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        try:
            raw.decode()
        except UnicodeDecodeError as bad:
            raise EventError(
                "not_utf8", f"{what}: byte at offset {bad.start} is not UTF-8 ({bad.reason})"
            ) from None
        raise EventError("not_json", f"{what}: {exc}"[:200]) from None


def _unwrap(document: Any, what: str) -> Any:
    """The payload of the JSON converter's schema envelope, or the document without one."""
    if isinstance(document, dict) and set(document) == {"schema", "payload"}:
        return document["payload"]
    return document


def _timestamp(value: Any, column: str) -> str:
    """A timestamp column as RFC 3339: Debezium writes ``timestamptz`` as an ISO string and
    ``timestamp`` as microseconds since the epoch (``adaptive_time_microseconds``)."""
    if isinstance(value, str):
        return str(_check("created_at", value, column))
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            moment = datetime.fromtimestamp(value / 1_000_000, UTC)
        except (OverflowError, OSError, ValueError):
            raise EventError("out_of_range", f"{column} {value} µs is no date") from None
        return moment.isoformat().replace("+00:00", "Z")
    raise EventError("wrong_type", f"{column} must be a timestamp, got {value!r}"[:200])


def _commit_time(payload: dict[str, Any]) -> str:
    """When the database committed the change (``source.ts_ms``, else the event's ``ts_ms``)."""
    source = payload.get("source")
    millis = source.get("ts_ms") if isinstance(source, dict) else None
    if not isinstance(millis, int):
        millis = payload.get("ts_ms")
    if not isinstance(millis, int) or isinstance(millis, bool):
        raise EventError("bad_envelope", "neither source.ts_ms nor ts_ms is a whole number")
    moment = datetime.fromtimestamp(millis / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _lsn(payload: dict[str, Any]) -> int:
    """The change's log position (``source.lsn``); 0 when the connector gives none."""
    source = payload.get("source")
    lsn = source.get("lsn") if isinstance(source, dict) else None
    return lsn if isinstance(lsn, int) and not isinstance(lsn, bool) and lsn >= 0 else 0


def _column(row: dict[str, Any], name: str, table: str, op: str) -> Any:
    if name not in row:
        hint = ""
        if op == "d":
            hint = f" (a delete carries every column only with REPLICA IDENTITY FULL on {table})"
        raise EventError("missing_field", f"{table} row has no {name}{hint}"[:200])
    return row[name]


def _key_user(key: bytes | None, field_name: str) -> int:
    """The id the record's key names (``{"user_id": N}``, or ``{"id": N}`` for products)."""
    if key is None:
        raise EventError("key_mismatch", f'the change has no key; expected {{"{field_name}": N}}')
    try:
        document = _unwrap(msgspec.json.decode(key), "key")
    except msgspec.DecodeError:
        raise EventError("key_mismatch", f"key {key[:40]!r} is not JSON") from None
    value = document.get(field_name) if isinstance(document, dict) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise EventError("key_mismatch", f'key {key[:40]!r} is not {{"{field_name}": N}}')
    return value


def _label(row: dict[str, Any], name: str) -> str:
    value = _check(name, row.get(name))
    return MISSING if value is None else str(value)


def _profile(row: dict[str, Any], op: str) -> UserEvent:
    """The users row's profile. A null (or, for text, empty) value is *missing*, as in the
    SQL: kept as ``None``, so the user is not assignable until it is set (a database row may
    lack what a JSON event must carry). Any other value must pass the input table."""
    values: dict[str, Any] = {
        "user_id": _check("user_id", _column(row, "id", "users", op), "id"),
        "created_at": _timestamp(_column(row, "created_at", "users", op), "created_at"),
    }
    for name in ("age", "gender", "country", "traffic_source"):
        value = _column(row, name, "users", op)
        values[name] = None if value is None or value == "" else _check(name, value)
    return UserEvent(**values)


def _row_change(
    table: str, row: dict[str, Any], op: str, present: bool, at: str, lsn: int
) -> OrderRow | ItemRow:
    user_id = _check("user_id", _column(row, "user_id", table, op))
    if table == "orders":
        order_id = _check("order_id", _column(row, "order_id", table, op))
        return OrderRow(order_id, user_id, present, at, lsn)
    return ItemRow(
        item_id=_check("order_id", _column(row, "id", table, op), "id"),
        order_id=_check("order_id", _column(row, "order_id", table, op)),
        user_id=user_id,
        product_id=_check("product_id", _column(row, "product_id", table, op)),
        present=present,
        created_at=at,
        lsn=lsn,
    )


def decode_change(table_of: dict[str, str], topic: str, key: bytes | None, raw: bytes) -> Decoded:
    """One change event's value (``raw``, not a tombstone) and key -> what it means.

    Args:
        table_of: change topic -> its table.

    Raises:
        EventError: the event cannot be used; see the module docstring for the reasons.
    """
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError("too_large", f"{len(raw)} bytes, at most {MAX_EVENT_BYTES} accepted")
    payload = _unwrap(_json(raw, "value"), "value")
    if not isinstance(payload, dict):
        raise EventError("bad_envelope", "the value is not a Debezium change event object")
    op = payload.get("op")
    if not isinstance(op, str) or op not in _OPS:
        raise EventError("bad_envelope", f"op must be one of c, u, r, d, t; got {op!r}"[:200])
    source = payload.get("source")
    table = source.get("table") if isinstance(source, dict) else None
    if table not in TABLES:
        raise EventError("unknown_table", f"source.table {table!r} is not one of {TABLES}"[:200])
    if table != table_of.get(topic, table):
        raise EventError("unknown_table", f"a {table} change on {topic}, another table's topic")
    at = _commit_time(payload)
    lsn = _lsn(payload)
    if op == "t":
        if table == "users":
            raise EventError(
                "unsupported_change",
                "TRUNCATE of users: delete the rows instead (each user then leaves), or drop "
                "the app's state and re-snapshot (docs/cdc.md)",
            )
        if lsn == 0:
            raise EventError("bad_envelope", f"TRUNCATE of {table} without source.lsn")
        return Decoded(truncate=Truncate(table, lsn, at))
    before, after = payload.get("before"), payload.get("after")
    row = before if op == "d" else after
    if not isinstance(row, dict):
        side = "before" if op == "d" else "after"
        raise EventError("bad_envelope", f"op {op} without a row in {side}")
    if table == "products":
        product_id = _check("product_id", _column(row, "id", table, op), "id")
        if _key_user(key, "id") != product_id:
            raise EventError("key_mismatch", f"key {key!r} but products.id {product_id}"[:200])
        if op == "d":
            return Decoded(product=ProductRow(product_id, False, MISSING, MISSING, at, lsn))
        brand, category = _label(row, "brand"), _label(row, "category")
        return Decoded(product=ProductRow(product_id, True, brand, category, at, lsn))
    keyed = _key_user(key, "user_id")
    if table == "users":
        user_id = _check("user_id", _column(row, "id", table, op), "id")
        if keyed != user_id:
            raise EventError("key_mismatch", f"key {key!r} but users.id {user_id}"[:200])
        if op == "d":
            return Decoded([UserLeft(user_id=user_id, created_at=at)])
        return Decoded([_profile(row, op)])
    change = _row_change(table, row, op, op != "d", at, lsn)
    if keyed != change.user_id:
        raise EventError("key_mismatch", f"key {key!r} but {table}.user_id {change.user_id}"[:200])
    routed: list[Change] = []
    if op == "u" and isinstance(before, dict) and before.get("user_id") not in (None, keyed):
        # The row moved: the old user loses it, through their owner (one owner per user).
        routed.append(_row_change(table, before, op, False, at, lsn))
    return Decoded([change], routed=routed)
