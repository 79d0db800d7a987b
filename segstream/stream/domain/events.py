"""The input events on the wire: typed records, and their validation.

Both input topics carry UTF-8 JSON objects whose shape is fixed by the JSON Schema files in
``segstream/stream/domain/schemas/`` (``users.json``, ``orders.json``), the contract for producers;
the message key is the user_id as a UTF-8 decimal string (``b"42"``), the same for both topics
so that they stay co-partitioned. Parsing is three checks, each with a short reason code for
the dead-letter topic:

1. the raw bytes: size (``too_large``, checked before anything is read), text encoding
   (``not_utf8``: bytes that are not UTF-8 anywhere in the value, or a ``\\u`` escape of a lone
   UTF-16 surrogate, which no UTF-8 text can hold), JSON syntax (``not_json``: NaN and
   Infinity, a byte order mark, raw control characters such as NUL, trailing data included);
2. the schema (``not_object``, ``missing_field``, ``wrong_type``, ``out_of_range`` (numbers
   too large for any type included), ``unknown_status``, ``empty_items``,
   ``unexpected_field``, ``too_large``, ``bad_timestamp``, ``invalid_value``);
3. what neither msgspec nor a schema checks: no object repeats a key (``invalid_value``; a
   JSON parser would silently keep the last value), the timestamp is a real date
   (``bad_timestamp``) and the key names the same user as the payload (``key_mismatch``: a
   wrongly keyed event would land on another worker's partition and break the
   one-owner-per-user promise).

A message is judged by the first check it fails, in that order, except that invalid UTF-8
beats any other finding of step 2: msgspec stops at the first problem, so the encoding is
checked over the whole value whenever msgspec refuses it (a value msgspec accepts has had
every string decoded, so it is UTF-8). Whatever the bytes, parsing either returns an event
or raises :class:`~segstream.errors.EventError` with one of :data:`REASONS`: nesting cannot
go deeper than the records' own (an order's items), because msgspec checks types as it
descends.

Steps 1 and 2 are one pass of ``msgspec``, decoding straight into the typed records below,
whose field constraints restate the JSON Schema files (about 1 µs an order; ``jsonschema``'s
interpreter takes 80 µs, ``fastjsonschema`` 4 µs plus the JSON parse: too much of a per-event
budget of tens of µs). The unit tests check that ``jsonschema`` with the files and this module
judge every sample alike. One deliberate difference: an integer written with a fraction
(``7.0``) is ``wrong_type`` here, where JSON Schema would accept it.
"""

from __future__ import annotations

import codecs
import json
import re
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Annotated, Any, Final, Literal

import msgspec

from segstream.errors import EventError

__all__ = [
    "MAX_EVENT_BYTES",
    "REASONS",
    "STATUSES",
    "Event",
    "OrderEvent",
    "OrderItem",
    "Source",
    "UserEvent",
    "load_schema",
    "parse_order",
    "parse_user",
    "user_key",
]

MAX_EVENT_BYTES: Final = 64 * 1024
"""Largest accepted input message value, in bytes; larger ones are dead-lettered unread."""

STATUSES: Final = ("Processing", "Shipped", "Complete", "Returned", "Cancelled")
"""Order statuses thelook knows; any other is ``unknown_status``."""

REASONS: Final = (
    "not_json",
    "not_utf8",
    "not_object",
    "too_large",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "unknown_status",
    "empty_items",
    "unexpected_field",
    "bad_timestamp",
    "invalid_value",
    "key_mismatch",
)
"""Every reason code an input can be rejected with."""

# The constraints of schemas/users.json and schemas/orders.json, for msgspec.
_ID = Annotated[int, msgspec.Meta(ge=1, le=9_007_199_254_740_991)]
_NAME = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_LABEL = Annotated[str, msgspec.Meta(max_length=200)] | None
_TIMESTAMP = Annotated[
    str,
    msgspec.Meta(
        max_length=40,
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
        r"([Zz]|[+-][0-9]{2}:[0-9]{2})$",
    ),
]


class UserEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A user profile upsert; it replaces the user's previous profile as a whole."""

    user_id: _ID
    age: Annotated[int, msgspec.Meta(ge=0, le=120)]
    """Whole years."""
    gender: _NAME
    country: _NAME
    traffic_source: _NAME
    created_at: _TIMESTAMP
    """RFC 3339, as sent."""


class OrderItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One line of an order; unseen brands and categories are valid."""

    product_id: _ID
    brand: _LABEL
    """``None`` or ``""`` when missing: not counted, as in the SQL."""
    category: _LABEL
    """``None`` or ``""`` when missing: not counted."""
    sale_price: Annotated[float, msgspec.Meta(ge=0, le=100_000)]


class OrderEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An order and its items (at least one); re-sent with the same order_id on status updates."""

    order_id: _ID
    user_id: _ID
    status: Literal["Processing", "Shipped", "Complete", "Returned", "Cancelled"]
    created_at: _TIMESTAMP
    """RFC 3339, as sent."""
    items: Annotated[tuple[OrderItem, ...], msgspec.Meta(min_length=1, max_length=100)]


Event = UserEvent | OrderEvent
"""A valid input event."""


class Source(msgspec.Struct, frozen=True):
    """Where an input event was read: its topic, partition and offset."""

    topic: str
    partition: int
    offset: int


def user_key(user_id: int) -> bytes:
    """The Kafka message key of every event about ``user_id``: its decimal digits in UTF-8."""
    return str(user_id).encode()


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``schemas/<name>.json`` beside this module, as a dict (cached: do not
    mutate it).

    Raises:
        FileNotFoundError: no such schema file.
    """
    text = resources.files(__package__).joinpath("schemas", f"{name}.json").read_text()
    return json.loads(text)


_DECODERS: Final = {
    UserEvent: msgspec.json.Decoder(UserEvent),
    OrderEvent: msgspec.json.Decoder(OrderEvent),
}

# A failed check as msgspec words it -> our reason code (first match wins).
_MESSAGE_REASONS: Final = (
    (re.compile(r"- at `\$\.status`$"), "unknown_status"),  # null, a number, "Lost"...
    (re.compile(r"^Object missing required field"), "missing_field"),
    (re.compile(r"^Object contains unknown field"), "unexpected_field"),
    (re.compile(r"^Expected `object`, got `[a-z]+`$"), "not_object"),  # the document itself
    (re.compile(r"^Expected `array` of length >= 1"), "empty_items"),
    (re.compile(r"of length <="), "too_large"),
    (re.compile(r"^Expected `(int|float)` [<>]=|out of range"), "out_of_range"),
    (re.compile(r"^Invalid enum value"), "unknown_status"),
    (re.compile(r"matching regex"), "bad_timestamp"),
    (re.compile(r"^Expected `[a-z |]+`, got `"), "wrong_type"),
)


def _reason(message: str) -> str:
    for pattern, reason in _MESSAGE_REASONS:
        if pattern.search(message):
            return reason
    return "invalid_value"


def _rejection(raw: bytes, exc: msgspec.DecodeError | UnicodeDecodeError) -> EventError:
    """Why msgspec refused ``raw`` (``exc``), as an :class:`EventError`; the failure path only."""
    try:
        raw.decode()
    except UnicodeDecodeError as bad:
        byte = raw[bad.start : bad.start + 1].hex()
        return EventError(
            "not_utf8", f"byte 0x{byte} at offset {bad.start} is not UTF-8 ({bad.reason})"
        )
    message = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        return EventError(_reason(message), message[:200])
    if "surrogate" in message:  # msgspec's words for a lone \ud800-\udfff escape
        return EventError("not_utf8", f"a \\u escape is a lone UTF-16 surrogate ({message})"[:200])
    if raw.startswith(codecs.BOM_UTF8):
        return EventError("not_json", "starts with a UTF-8 byte order mark, which JSON forbids")
    return EventError("not_json", message[:200])


def _decode(raw: bytes | None, kind: type[Event]) -> Event:
    """Bytes -> a valid ``kind`` record, no key repeated; else raises :class:`EventError`."""
    if raw is None:
        raise EventError("not_json", "the message has no value")
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError("too_large", f"{len(raw)} bytes, at most {MAX_EVENT_BYTES} accepted")
    try:
        event = _DECODERS[kind].decode(raw)
    # msgspec raises UnicodeDecodeError itself for a string that is not UTF-8 (a ValueError,
    # not one of its own errors); ValidationError is a DecodeError.
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _rejection(raw, exc) from None
    _check_unique_keys(raw, event)
    return event


class _RepeatedKey(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _unique(pairs: list[tuple[str, Any]]) -> None:
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise _RepeatedKey(name)
        seen.add(name)


_USER_FIELDS: Final = len(UserEvent.__struct_fields__)
_ORDER_FIELDS: Final = len(OrderEvent.__struct_fields__)
_ITEM_FIELDS: Final = len(OrderItem.__struct_fields__)
_ESCAPED_COLONS: Final = (b"\\u003a", b"\\u003A")


def _string_colons(event: Event) -> int:
    """``:`` characters in ``event``'s string values."""
    if isinstance(event, UserEvent):
        strings = (event.gender, event.country, event.traffic_source, event.created_at)
        return sum(text.count(":") for text in strings)
    colons = event.created_at.count(":")
    for item in event.items:
        colons += (item.brand or "").count(":") + (item.category or "").count(":")
    return colons


def _check_unique_keys(raw: bytes, event: Event) -> None:
    """Raise ``invalid_value`` if an object of ``raw`` (which decoded into ``event``) repeats a key.

    msgspec keeps the last of repeated keys. Re-parsing every event with a duplicate check
    would cost ~10 µs (several times the decoding), so the common case is settled by counting
    ``:``. Each one in ``raw`` separates a key from its value or sits in a string: keys are
    field names (msgspec refused any other), which have none, so the rest are in string
    values, the event's own plus those of any repeated keys. A ``:`` may also be escaped
    (``\\u003a``), so those escapes are added to the count (a false one, ``\\\\u003a``, only
    overcounts). Every object holds all its fields (msgspec checked), hence::

        colons + escapes - the event's string colons >= pairs in raw >= expected pairs

    with equality of the outer two only when no key repeats. Anything else takes the exact
    path: a standard-library parse with a duplicate check, whose depth msgspec has already
    bounded (an order's items are the deepest level).
    """
    if isinstance(event, UserEvent):
        pairs = _USER_FIELDS
    else:
        pairs = _ORDER_FIELDS + _ITEM_FIELDS * len(event.items)
    excess = raw.count(b":") - pairs
    if b"\\" in raw:
        excess += sum(raw.count(escape) for escape in _ESCAPED_COLONS)
    # created_at always has colons; the other strings seldom do, so they are counted lazily.
    if excess == event.created_at.count(":") or excess == _string_colons(event):
        return
    try:
        json.loads(raw.decode(), object_pairs_hook=_unique)
    except _RepeatedKey as exc:
        raise EventError(
            "invalid_value", f"key {exc.name[:40]!r} appears more than once in one object"
        ) from None


def _check_timestamp(value: str) -> str:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise EventError("bad_timestamp", f"created_at {value[:40]!r} is not a date") from None
    return value


def _check_key(key: bytes | None, user_id: int) -> None:
    if key != user_key(user_id):
        shown = key[:40] if key is not None else None
        raise EventError("key_mismatch", f"key {shown!r} but user_id {user_id}")


def parse_user(raw: bytes | None, key: bytes | None) -> UserEvent:
    """Validate a ``users`` message (value bytes and key bytes) into a :class:`UserEvent`.

    Raises:
        EventError: with one of :data:`REASONS` and a human-readable detail.
    """
    event = _decode(raw, UserEvent)
    assert isinstance(event, UserEvent)
    _check_key(key, event.user_id)
    _check_timestamp(event.created_at)
    return event


def parse_order(raw: bytes | None, key: bytes | None) -> OrderEvent:
    """Validate an ``orders`` message (value bytes and key bytes) into an :class:`OrderEvent`.

    Raises:
        EventError: with one of :data:`REASONS` and a human-readable detail.
    """
    event = _decode(raw, OrderEvent)
    assert isinstance(event, OrderEvent)
    _check_key(key, event.user_id)
    _check_timestamp(event.created_at)
    return event
