"""The input events on the wire: typed records, and their validation.

Both input topics carry UTF-8 JSON objects whose shape is fixed by the JSON Schema files in
``segstream/stream/domain/schemas/`` (``users.json``, ``orders.json``), the contract for producers;
every field's rule there and here is the input table's (:mod:`segstream.training.inputs`, the
one definition the API, the CLI and training check values with too). The message key is the
user_id as a UTF-8 decimal string (``b"42"``), the same for both topics so that they stay
co-partitioned. Parsing is three checks, each with a short reason code for the dead-letter
topic:

1. the raw bytes: size (``too_large``, checked before anything is read), text encoding
   (``not_utf8``: bytes that are not UTF-8 anywhere in the value, or a ``\\u`` escape of a lone
   UTF-16 surrogate, which no UTF-8 text can hold), JSON syntax (``not_json``: NaN and
   Infinity, a byte order mark, raw control characters such as NUL, trailing data included);
2. the schema (``not_object``, ``missing_field``, ``wrong_type``, ``out_of_range`` (numbers
   too large for any type included), ``unknown_status``, ``empty_items``, ``too_large``,
   ``bad_timestamp``, ``invalid_value``); a refused field's detail is the input table's
   message (``age must be a whole number from 0 to 120, got -5``), the words the API and the
   CLI use for the same value;
3. what neither msgspec nor a schema checks: no object repeats a key (``invalid_value``; a
   JSON parser would silently keep the last value), the timestamp is a real date
   (``bad_timestamp``) and the key names the same user as the payload (``key_mismatch``: a
   wrongly keyed event would land on another worker's partition and break the
   one-owner-per-user promise). Fields no record has are found here too: ignored and named to
   the caller (``SEGSTREAM_UNKNOWN_FIELDS=ignore``, the default), or ``unexpected_field``.

A message is judged by the first check it fails, in that order, except that invalid UTF-8
beats any other finding of step 2: msgspec stops at the first problem, so the encoding is
checked over the whole value whenever msgspec refuses it (a value msgspec accepts has had
every string decoded, so it is UTF-8). Whatever the bytes, parsing either returns an event
or raises :class:`~segstream.errors.EventError` with one of :data:`REASONS`: nesting cannot
go deeper than the records' own (an order's items), because msgspec checks types as it
descends; an unknown field's value too deep to skip is ``invalid_value``.

Steps 1 and 2 are one pass of ``msgspec``, decoding straight into the typed records below,
whose field constraints are the input table's ``msgspec.Meta`` (about 2-3 µs an event with
the key and date checks; ``jsonschema``'s interpreter takes 80 µs, ``fastjsonschema`` 4 µs
plus the JSON parse: too much of a per-event budget of tens of µs). The unit tests check that
``jsonschema`` with the files and this module judge every sample alike. Only an event msgspec
refuses pays more (~6 µs): it is parsed again to word the refusal with the table, and one
whose only fault is a whole number written with a fraction (``7.0``, which msgspec's strict
``int`` refuses and the table takes as 7) is decoded again from that parse.
"""

from __future__ import annotations

import codecs
import json
import re
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, TypeAlias

import msgspec

from segstream.errors import EventError, InputError
from segstream.stream.domain.json_keys import RepeatedKeyError, unique_keys
from segstream.training.inputs import MAX_ID, RULES, STATUSES

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_ITEMS",
    "REASONS",
    "STATUSES",
    "UNKNOWN_FIELDS",
    "Event",
    "Message",
    "OrderEvent",
    "OrderItem",
    "Source",
    "UnknownFieldLog",
    "UnknownFields",
    "UserEvent",
    "UserLeft",
    "load_schema",
    "parse_event",
    "parse_leave",
    "parse_order",
    "parse_user",
    "user_key",
]

MAX_EVENT_BYTES: Final = 64 * 1024
"""Largest accepted input message value, in bytes; larger ones are dead-lettered unread."""

UnknownFields = Literal["ignore", "dead_letter"]
"""What to do with an event's fields that no record has (``SEGSTREAM_UNKNOWN_FIELDS``)."""
UNKNOWN_FIELDS: Final = ("ignore", "dead_letter")
"""The values of :data:`UnknownFields`."""

MAX_ITEMS: Final = 100
"""Most items one order may carry; more is ``too_large``."""

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

# Every field's constraints come from the one input table (segstream/training/inputs.py).
if TYPE_CHECKING:
    # What the type checker sees: the Python type each rule decodes to, without the constraints
    # it cannot evaluate. tests/unit/stream/domain/test_events.py holds the two views equal.
    _ID: TypeAlias = int
    _AGE: TypeAlias = int
    _NAME: TypeAlias = str
    _LABEL: TypeAlias = str | None
    _PRICE: TypeAlias = float
    _STATUS: TypeAlias = str
    _TIMESTAMP: TypeAlias = str
else:
    _ID = RULES["user_id"].msgspec_type()
    _AGE = RULES["age"].msgspec_type()
    _NAME = RULES["gender"].msgspec_type()
    _LABEL = RULES["brand"].msgspec_type()
    _PRICE = RULES["sale_price"].msgspec_type()
    _STATUS = RULES["status"].msgspec_type()
    _TIMESTAMP = RULES["created_at"].msgspec_type()


class UserEvent(msgspec.Struct, frozen=True):
    """A user profile upsert; it replaces the user's previous profile as a whole."""

    user_id: _ID
    age: _AGE
    """Whole years."""
    gender: _NAME
    country: _NAME
    traffic_source: _NAME
    created_at: _TIMESTAMP
    """RFC 3339, as sent."""


class OrderItem(msgspec.Struct, frozen=True):
    """One line of an order; unseen brands and categories are valid."""

    product_id: _ID
    brand: _LABEL
    """``None`` or ``""`` when missing: not counted, as in the SQL."""
    category: _LABEL
    """``None`` or ``""`` when missing: not counted."""
    sale_price: _PRICE


_ITEMS = Annotated[tuple[OrderItem, ...], msgspec.Meta(min_length=1, max_length=MAX_ITEMS)]


class OrderEvent(msgspec.Struct, frozen=True):
    """An order and its items (at least one); re-sent with the same order_id on status updates."""

    order_id: _ID
    user_id: _ID
    status: _STATUS
    created_at: _TIMESTAMP
    """RFC 3339, as sent."""
    items: _ITEMS


class UserLeft(msgspec.Struct, frozen=True):
    """The user left: segstream erases every key it holds for them (a domain change).

    Made by a source, never decoded from a message body: a tombstone (null value) keyed by
    the user on the ``users`` topic (what ``segstream forget`` and ``POST /users/{id}/forget``
    produce), or a deleted ``users`` row from change data capture. Applied in order with the
    user's other events by the worker that owns the user's partition; a later event of the
    user starts them afresh (sequence numbers from 1 again, see ``docs/stream.md``).
    """

    user_id: _ID
    created_at: str
    """RFC 3339 UTC: when the user left (the tombstone's Kafka timestamp, or the database's
    commit time of the delete), the leave event's ``occurred_at``."""


Message = UserEvent | OrderEvent
"""An event decoded from a message body (a user leaving has none: :func:`parse_leave`)."""

Event = UserEvent | OrderEvent | UserLeft
"""A valid input event (a profile, an order, or a user leaving)."""


class Source(msgspec.Struct, frozen=True):
    """Where an input event was read: its topic, partition and offset."""

    topic: str
    partition: int
    offset: int


class UnknownFieldLog:
    """Says which ignored fields to log: each (input, field) pair once, at most ``limit`` pairs.

    A producer sending a new field sends it in every record: one line says so and a counter
    says how often. Past ``limit`` pairs nothing more is logged, so a producer inventing
    names cannot grow memory.
    """

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self.seen: set[tuple[str, str]] = set()

    def first_times(self, source: str, names: tuple[str, ...]) -> list[str]:
        """The lines to log for ``names`` ignored in an input of ``source`` (a topic, or
        ``predict``): one per pair not logged before."""
        lines = []
        for name in names:
            pair = (source, name)
            if pair in self.seen or len(self.seen) >= self.limit:
                continue
            self.seen.add(pair)
            lines.append(
                f"inputs of {source} carry the field {name[:40]!r}, which none has: ignored and "
                "counted (segstream_unknown_fields_total); SEGSTREAM_UNKNOWN_FIELDS=dead_letter "
                "refuses them instead"
            )
        return lines


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
    schema: dict[str, Any] = json.loads(text)
    return schema


_DECODERS: Final[
    dict[type[Message], msgspec.json.Decoder[UserEvent] | msgspec.json.Decoder[OrderEvent]]
] = {
    UserEvent: msgspec.json.Decoder(UserEvent),
    OrderEvent: msgspec.json.Decoder(OrderEvent),
}

# A failed check as msgspec words it -> our reason code (first match wins), for the refusals
# the input table does not word itself (the document's shape: missing fields, item lists).
_MESSAGE_REASONS: Final = (
    (re.compile(r"- at `\$\.status`$"), "unknown_status"),  # null, a number, "Lost"...
    (re.compile(r"^Object missing required field"), "missing_field"),
    (re.compile(r"^Expected `object`, got `[a-z]+`$"), "not_object"),  # the document itself
    (re.compile(r"^Expected `array` of length >= 1"), "empty_items"),
    (re.compile(r"of length <="), "too_large"),
    (re.compile(r"^Expected `(int|float)` [<>]=|out of range"), "out_of_range"),
    (re.compile(r"^Invalid enum value"), "unknown_status"),
    (re.compile(r"matching regex"), "bad_timestamp"),
    (re.compile(r"^Expected `[a-z |]+`, got `"), "wrong_type"),
)
_PATH: Final = re.compile(r" - at `\$((?:\.[a-z_]+|\[[0-9]+\])+)`$")
_PATH_STEP: Final = re.compile(r"\.([a-z_]+)|\[([0-9]+)\]")
_REPAIRS: Final = 2 + 2 * MAX_ITEMS
"""Most integral floats one event can hold (its two ids, and two per item)."""


def _reason(message: str) -> str:
    for pattern, reason in _MESSAGE_REASONS:
        if pattern.search(message):
            return reason
    return "invalid_value"


def _steps(message: str) -> list[str | int] | None:
    """The path msgspec names at the end of ``message`` (``$.items[0].brand``) as steps."""
    found = _PATH.search(message)
    if found is None:
        return None
    return [name if name else int(index) for name, index in _PATH_STEP.findall(found.group(1))]


def _rejudge(document: Any, kind: type[Message], message: str) -> Message:
    """What the input table says of the field msgspec refused (``message``) in ``document``.

    Either the field breaks its rule (raises with the table's reason and words), or it is a
    whole number written with a fraction: it is replaced by its int and the document decoded
    again, until it decodes or a refusal is found. Whatever the table does not judge (the
    document's shape) keeps msgspec's words.

    Raises:
        EventError: the refusal.
    """
    for _ in range(_REPAIRS):
        steps = _steps(message)
        if not steps or not isinstance(steps[-1], str) or steps[-1] not in RULES:
            break
        parent = document
        try:
            for step in steps[:-1]:
                parent = parent[step]
            value = parent[steps[-1]]
        except (KeyError, IndexError, TypeError):
            break
        name = "".join(f".{s}" if isinstance(s, str) else f"[{s}]" for s in steps)[1:]
        try:
            repaired = RULES[steps[-1]].check(value, name)
        except InputError as exc:
            raise EventError(exc.reason, exc.message) from None
        if type(repaired) is type(value):  # the table accepts what msgspec refused: its words
            break
        parent[steps[-1]] = repaired
        try:
            return msgspec.convert(document, kind)
        except msgspec.ValidationError as again:
            message = str(again)
    raise EventError(_reason(message), message[:200])


def _rejection(
    raw: bytes, kind: type[Message], exc: msgspec.DecodeError | UnicodeDecodeError
) -> Message:
    """Why msgspec refused ``raw`` (``exc``); the failure path only.

    Returns the event after all when the refusal was a whole number written with a fraction
    (``30.0``), which the input table accepts as the int.

    Raises:
        EventError: the refusal, worded by the input table where it judges the field.
    """
    try:
        text = raw.decode()
    except UnicodeDecodeError as bad:
        byte = raw[bad.start : bad.start + 1].hex()
        raise EventError(
            "not_utf8", f"byte 0x{byte} at offset {bad.start} is not UTF-8 ({bad.reason})"
        ) from None
    message = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        try:
            document = json.loads(text)
        # json refuses what msgspec parsed only past its own limits: integers of over 4,300
        # digits, nesting past the recursion limit. msgspec's words are right for those.
        except (ValueError, RecursionError):
            raise EventError(_reason(message), message[:200]) from None
        return _rejudge(document, kind, message)
    if "surrogate" in message:  # msgspec's words for a lone \ud800-\udfff escape
        raise EventError("not_utf8", f"a \\u escape is a lone UTF-16 surrogate ({message})"[:200])
    if raw.startswith(codecs.BOM_UTF8):
        raise EventError("not_json", "starts with a UTF-8 byte order mark, which JSON forbids")
    raise EventError("not_json", message[:200])


_TOO_DEEP: Final = "an unknown field's value nests too deeply to be read (about 1,000 levels)"


def _decode(raw: bytes | None, kind: type[Message]) -> tuple[Message, tuple[str, ...]]:
    """Bytes -> a valid ``kind`` record, no key repeated, and the unknown fields' names.

    Raises:
        EventError: with one of :data:`REASONS`.
    """
    if raw is None:
        raise EventError("not_json", "the message has no value")
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError("too_large", f"{len(raw)} bytes, at most {MAX_EVENT_BYTES} accepted")
    try:
        event = _DECODERS[kind].decode(raw)
    # msgspec raises UnicodeDecodeError itself for a string that is not UTF-8 (a ValueError,
    # not one of its own errors); ValidationError is a DecodeError.
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        event = _rejection(raw, kind, exc)
    except RecursionError:  # msgspec skipping an unknown field's deeply nested value
        raise EventError("invalid_value", _TOO_DEEP) from None
    return event, _check_keys(raw, event)


_USER_FIELDS: Final = frozenset(UserEvent.__struct_fields__)
_ORDER_FIELDS: Final = frozenset(OrderEvent.__struct_fields__)
_ITEM_FIELDS: Final = frozenset(OrderItem.__struct_fields__)
_ESCAPED_COLONS: Final = (b"\\u003a", b"\\u003A")


def _string_colons(event: Message) -> int:
    """``:`` characters in ``event``'s string values."""
    if isinstance(event, UserEvent):
        strings = (event.gender, event.country, event.traffic_source, event.created_at)
        return sum(text.count(":") for text in strings)
    colons = event.created_at.count(":")
    for item in event.items:
        colons += (item.brand or "").count(":") + (item.category or "").count(":")
    return colons


def _unknown_names(document: dict[str, Any], event: Message) -> tuple[str, ...]:
    """Names of ``document``'s fields that ``event``'s record does not have, first seen first.

    An item's field is named ``items[].<name>``.
    """
    known = _USER_FIELDS if isinstance(event, UserEvent) else _ORDER_FIELDS
    names = [name for name in document if name not in known]
    if isinstance(event, OrderEvent):
        for item in document["items"]:
            names.extend(f"items[].{name}" for name in item if name not in _ITEM_FIELDS)
    return tuple(dict.fromkeys(names))


def _check_keys(raw: bytes, event: Message) -> tuple[str, ...]:
    """The names of the fields of ``raw`` (which decoded into ``event``) that no record has.

    Raises ``invalid_value`` if an object of ``raw`` repeats a key.

    msgspec keeps the last of repeated keys and skips unknown fields. Re-parsing every event
    would cost ~10 µs (several times the decoding), so the common case is settled by counting
    ``:``. Each one in ``raw`` separates a key from its value or sits in a string: keys are
    field names, which have none, so the rest are in string values, the event's own plus those
    of any repeated or unknown keys. A ``:`` may also be escaped (``\\u003a``), so those
    escapes are added to the count (a false one, ``\\\\u003a``, only overcounts). Every
    object holds all its fields (msgspec checked), hence::

        colons + escapes - the event's string colons >= pairs in raw >= expected pairs

    with equality of the outer two only when no key repeats and none is unknown. Anything
    else takes the exact path: a standard-library parse with a duplicate check.
    """
    pairs = len(_USER_FIELDS)
    if isinstance(event, OrderEvent):
        pairs = len(_ORDER_FIELDS) + len(_ITEM_FIELDS) * len(event.items)
    excess = raw.count(b":") - pairs
    if b"\\" in raw:
        excess += sum(raw.count(escape) for escape in _ESCAPED_COLONS)
    # created_at always has colons; the other strings seldom do, so they are counted lazily.
    if excess == event.created_at.count(":") or excess == _string_colons(event):
        return ()
    try:
        document = json.loads(raw.decode(), object_pairs_hook=unique_keys)
    except RepeatedKeyError as exc:
        raise EventError("invalid_value", str(exc)) from None
    except RecursionError:
        raise EventError("invalid_value", _TOO_DEEP) from None
    return _unknown_names(document, event)


def _check_timestamp(value: str) -> None:
    try:
        datetime.fromisoformat(value)
    except ValueError:  # the pattern's shape but no such date: the table words it
        try:
            RULES["created_at"].check(value, "created_at")
        except InputError as exc:
            raise EventError(exc.reason, exc.message) from None
        raise EventError("bad_timestamp", f"created_at {value[:40]!r} is not a date") from None


def _check_key(key: bytes | None, user_id: int) -> None:
    if key != user_key(user_id):
        shown = key[:40] if key is not None else None
        raise EventError("key_mismatch", f"key {shown!r} but user_id {user_id}")


def parse_event(
    raw: bytes | None,
    key: bytes | None,
    kind: type[Message],
    unknown_fields: UnknownFields = "ignore",
) -> tuple[Message, tuple[str, ...]]:
    """Validate a message (value and key bytes) into a ``kind`` record.

    Returns:
        The event, and the names of the fields it carried that no record has (``email``,
        ``items[].colour``), first seen first: ignored, for the caller to count.

    Raises:
        EventError: with one of :data:`REASONS` and a human-readable detail; an unknown
            field is ``unexpected_field`` when ``unknown_fields`` is ``dead_letter``.
    """
    event, unknown = _decode(raw, kind)
    if unknown and unknown_fields == "dead_letter":
        topic = "users" if kind is UserEvent else "orders"
        raise EventError(
            "unexpected_field",
            f"field {unknown[0][:40]!r} is not part of an event of {topic} "
            "(SEGSTREAM_UNKNOWN_FIELDS=dead_letter; ignore takes it)",
        )
    _check_key(key, event.user_id)
    _check_timestamp(event.created_at)
    return event, unknown


def parse_leave(key: bytes | None, left_at: datetime) -> UserLeft:
    """A tombstone on the ``users`` topic (a null value) -> the user it names left at ``left_at``.

    ``left_at`` must be timezone-aware (the record's Kafka timestamp); it becomes the leave's
    ``created_at`` in RFC 3339 UTC with millisecond precision (``2026-12-06T21:00:00.123Z``).

    Raises:
        EventError: ``key_mismatch`` when the key is not a user id as :func:`user_key` writes
            it (decimal digits, 1 to 2**53-1, no sign, no leading zero): a tombstone's only
            field is its key.
    """
    text = key.decode("ascii", "replace") if key is not None else ""
    if not (text.isdigit() and text.isascii() and text[0] != "0" and int(text) <= MAX_ID):
        shown = key[:40] if key is not None else None
        raise EventError(
            "key_mismatch",
            f"a tombstone on users must be keyed by a user id (decimal digits), got {shown!r}",
        )
    stamp = left_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return UserLeft(user_id=int(text), created_at=stamp)


def parse_user(
    raw: bytes | None, key: bytes | None, unknown_fields: UnknownFields = "ignore"
) -> UserEvent:
    """Validate a ``users`` message into a :class:`UserEvent` (:func:`parse_event`).

    Raises:
        EventError: with one of :data:`REASONS` and a human-readable detail.
    """
    event, _ = parse_event(raw, key, UserEvent, unknown_fields)
    assert isinstance(event, UserEvent)
    return event


def parse_order(
    raw: bytes | None, key: bytes | None, unknown_fields: UnknownFields = "ignore"
) -> OrderEvent:
    """Validate an ``orders`` message into an :class:`OrderEvent` (:func:`parse_event`).

    Raises:
        EventError: with one of :data:`REASONS` and a human-readable detail.
    """
    event, _ = parse_event(raw, key, OrderEvent, unknown_fields)
    assert isinstance(event, OrderEvent)
    return event
