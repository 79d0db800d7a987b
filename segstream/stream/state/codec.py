"""Encoding the Lua scripts' arguments and decoding their replies and a user's raw hash (pure).

``lua/apply.lua`` documents the hash fields and the reply layout these functions follow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec

from segstream.stream.domain.events import OrderEvent, Source, UserEvent, UserLeft
from segstream.stream.domain.leaving import Leave
from segstream.stream.domain.rows import (
    Change,
    ItemRow,
    OrderRow,
    ProductRefresh,
    TableTruncated,
)
from segstream.stream.domain.user import Settle, UserState

__all__ = [
    "STATE_WIDTH",
    "decode_settle",
    "decode_state",
    "decode_states",
    "describe_user",
    "encode_events",
    "encode_settle_row",
    "fence_field",
]

STATE_WIDTH: Final = 13
"""Values per user in ``apply.lua``'s reply."""


def _missing(value: object) -> str:
    """A profile value as stored; ``""`` for one a database row leaves missing (null or
    empty: change data capture), which reads back as ``None``. JSON events never have one."""
    return "" if value is None else str(value)


def _profile_text(value: bytes | None) -> str | None:
    return None if not value else value.decode()


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def fence_field(source: Source) -> str:
    """The hash field holding the last offset applied from ``source``'s topic and partition."""
    return f"f:{source.topic}:{source.partition}"


def encode_events(events: Sequence[tuple[Source, Change]]) -> list[list[Any]]:
    """One user's events, in order, as ``apply.lua`` reads them (see the script's header).

    Offsets and ids travel as decimal strings: Lua numbers are doubles. A
    :class:`~segstream.stream.domain.events.UserLeft` travels as a fence only (``"f"``): the
    erasure itself is a ``settle`` row (:class:`~segstream.stream.domain.leaving.Leave`); a
    leave sent to ``apply`` is the one a returning user's first events follow in the same
    batch, and its fence is stored with their new state so that a redelivered leave is
    recognised as applied.
    """
    encoded: list[list[Any]] = []
    for source, event in events:
        fence = fence_field(source)
        offset = str(source.offset)
        if isinstance(event, OrderEvent):
            items: list[str] = []
            for item in event.items:
                items += (item.brand or "", item.category or "")
            encoded.append(["o", fence, offset, str(event.order_id), items])
        elif isinstance(event, UserEvent):
            encoded.append(
                ["u", fence, offset, _missing(event.age), _missing(event.gender),
                 _missing(event.country), _missing(event.traffic_source)]
            )  # fmt: skip
        elif isinstance(event, UserLeft):
            encoded.append(["f", fence, offset])
        elif isinstance(event, OrderRow):
            encoded.append(
                ["ro", fence, offset, str(event.order_id), _flag(event.present), str(event.lsn)]
            )
        elif isinstance(event, ItemRow):
            encoded.append(
                ["ri", fence, offset, str(event.item_id), str(event.order_id),
                 str(event.product_id), _flag(event.present), event.brand, event.category,
                 str(event.lsn)]
            )  # fmt: skip
        elif isinstance(event, TableTruncated):
            encoded.append(["rt", fence, offset, event.table, str(event.lsn)])
        elif isinstance(event, ProductRefresh):
            encoded.append(
                ["rp", fence, offset, str(event.product_id), event.brand, event.category]
            )
        else:  # pragma: no cover - the type union is closed
            raise TypeError(f"not an event: {event!r}")
    return encoded


def _flag(present: bool) -> str:
    return "1" if present else "0"


def encode_json(value: object) -> bytes:
    return msgspec.json.encode(value)


def decode_state(user_id: int, reply: Sequence[Any]) -> UserState:
    """``apply.lua``'s reply (bytes or None items) -> :class:`UserState`.

    The twelfth and thirteenth items (changes queued, features version) may be left out or
    ``None``: they then count as 0.
    """
    applied, age, gender, country, source, orders, brand, category, segment, version, pending = (
        reply[:11]
    )
    changes, feature_version = (
        0 if len(reply) <= i or reply[i] is None else int(reply[i]) for i in (11, 12)
    )
    return UserState(
        user_id=user_id,
        applied=int(applied),
        age=None if not age else int(age),
        gender=_profile_text(gender),
        country=_profile_text(country),
        traffic_source=_profile_text(source),
        total_orders=0 if orders is None else int(orders),
        most_frequent_brand=_text(brand),
        most_frequent_category=_text(category),
        segment=None if segment is None else int(segment),
        model_version=_text(version),
        pending=int(pending),
        changes=changes,
        feature_version=feature_version,
    )


def decode_states(
    user_ids: Sequence[int], groups: Sequence[Sequence[int]], replies: Sequence[Any]
) -> list[UserState]:
    """The replies of one ``apply`` step (one per call, a call per group of users, each
    :data:`STATE_WIDTH` values per user in the group's order) -> each user's state, in
    ``user_ids``' order (every user of ``user_ids`` is in exactly one group).

    Raises:
        ValueError: not one reply per group.
    """
    states = {}
    for group, reply in zip(groups, replies, strict=True):
        for index, uid in enumerate(group):
            states[uid] = decode_state(uid, reply[STATE_WIDTH * index : STATE_WIDTH * (index + 1)])
    return [states[uid] for uid in user_ids]


def encode_settle_row(row: Settle | Leave) -> list[str]:
    """One ``settle`` row as ``lua/settle.lua`` reads it (its header documents both kinds).

    A :class:`Leave` is ``["x", fence field, offset, seen segment, seen model version, seen
    changes, leave event]``; a :class:`Settle` is nine strings: seen segment, seen model
    version, new segment, new model version, change event, updated_at, seen changes, seen
    features version, drift epoch. ``""`` stands for ``None`` (no segment, version, change or
    epoch); numbers travel as decimal strings.
    """
    if isinstance(row, Leave):
        return [
            "x",
            fence_field(row.source),
            str(row.source.offset),
            "" if row.seen_segment is None else str(row.seen_segment),
            row.seen_model_version or "",
            str(row.seen_changes),
            row.change.decode(),
        ]
    return [
        "" if row.seen_segment is None else str(row.seen_segment),
        row.seen_model_version or "",
        "" if row.segment is None else str(row.segment),
        row.model_version or "",
        row.change.decode() if row.change else "",
        row.updated_at,
        str(row.seen_changes),
        str(row.seen_feature_version),
        "" if row.drift_epoch is None else str(row.drift_epoch),
    ]


def decode_settle(
    groups: Sequence[Sequence[int]], replies: Sequence[Any]
) -> tuple[dict[int, list[bytes]], set[int]]:
    """The replies of one ``settle`` step (one per group of users) -> (user -> pending changes,
    oldest first, for users with any; the users whose row was refused).

    Each reply is one outbox per user of its group, in the group's order, then the 1-based
    positions in the group of the refused rows (``lua/settle.lua``).

    Raises:
        ValueError: not one reply per group, or not one outbox per user of a group.
    """
    pending: dict[int, list[bytes]] = {}
    refused: set[int] = set()
    for group, reply in zip(groups, replies, strict=True):
        *outboxes, refused_positions = reply
        refused.update(group[int(position) - 1] for position in refused_positions)
        for uid, changes in zip(group, outboxes, strict=True):
            if changes:
                pending[uid] = list(changes)
    return pending, refused


STATE_FIELDS: Final = (b"age", b"gen", b"cty", b"src", b"n", b"tb", b"tc", b"seg", b"mv")
"""Hash fields in the order of ``apply.lua``'s reply, after its leading ``applied``."""


def describe_user(
    user_id: int, fields: Mapping[bytes, bytes], pending: Sequence[bytes]
) -> dict[str, Any]:
    """Everything stored about a user, readable and JSON-ready (for ``segstream segment``).

    Keys: user_id, segment, model_version, drift_epoch (drift mode: the epoch of the user's
    last assignment; else ``None``), updated_at, changes (queued so far),
    feature_version (``apply`` calls that changed the features), assignable, features (by column),
    orders (the order ids remembered to count a re-send once, ascending: the user's highest,
    at most ``SEGSTREAM_ORDER_DEDUPE_WINDOW``), orders_floor (the highest order id forgotten,
    ``None`` while none was; an order at or below it counts as seen), brand_counts and
    category_counts (most first, then by name), fences (``topic:partition`` -> last applied
    offset), pending (change events).
    """
    reply = [
        0,
        *(fields.get(name) for name in STATE_FIELDS),
        len(pending),
        fields.get(b"cs"),
        fields.get(b"fv"),
    ]
    state = decode_state(user_id, reply)
    orders, brands, categories, fences = [], {}, {}, {}
    for raw_name, raw_value in fields.items():
        name = raw_name.decode()
        kind, sep, rest = name.partition(":")
        if not sep:
            continue
        if kind == "o":
            orders.append(int(rest))
        elif kind == "b":
            brands[rest] = int(raw_value)
        elif kind == "c":
            categories[rest] = int(raw_value)
        elif kind == "f":
            fences[rest] = int(raw_value)

    def ranked(counts: dict[str, int]) -> dict[str, int]:
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    updated, floor, epoch = fields.get(b"ua"), fields.get(b"of"), fields.get(b"de")
    return {
        "user_id": user_id,
        "segment": state.segment,
        "model_version": state.model_version,
        "drift_epoch": None if epoch is None else int(epoch),
        "updated_at": updated.decode() if updated else None,
        "changes": state.changes,
        "feature_version": state.feature_version,
        "assignable": state.assignable,
        "features": state.features(),
        "orders": sorted(orders),
        "orders_floor": None if floor is None else int(floor),
        "brand_counts": ranked(brands),
        "category_counts": ranked(categories),
        "fences": fences,
        "pending": [json.loads(change) for change in pending],
    }
