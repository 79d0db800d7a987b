"""The one definition of a valid input value: a table of constraints per field.

Every entry point that takes a customer's values checks them against :data:`RULES` and
nothing else, so a value is accepted or refused alike everywhere, with the same reason code
and the same message (:meth:`FieldRule.check`):

- the stream: the ``msgspec`` records of ``segstream/stream/domain/events.py`` take their
  field constraints from :meth:`FieldRule.msgspec_type` at import (no per-event Python check
  on the hot path); a record msgspec refuses is re-judged here to word the dead letter;
- ``POST /predict``: its body is checked with :func:`check_fields`, and the OpenAPI
  document's ``PredictRequest`` is :meth:`FieldRule.json_schema` of the same rules;
- ``segstream predict``: each option's text goes through :func:`parse_text`;
- training: :func:`segstream.training.frame_check.check_frame` excludes the feature rows
  that break a rule and counts them per field and reason, for the report's "who is
  segmented" section.

The stream's JSON Schema files (``segstream/stream/domain/schemas/``) restate these rules for
producers; a unit test holds them equal.

================  ===========  ===========================================================
field             kind         rule
================  ===========  ===========================================================
user_id,          integer      1 to 2**53-1 (exact in every JSON parser)
order_id,
product_id
age               integer      0 to 120, whole years
total_orders      integer      0 to 1,000,000
top               integer      0 to 50 (``predict``: how many similar users)
gender, country,  text         1 to 64 characters
traffic_source
brand, category   text|null    at most 200 characters; null or "" is a missing value
most_frequent_    text         1 to 200 characters (a known brand or category)
brand/_category
sale_price        number       0 to 100,000
status            choice       one of :data:`STATUSES`
created_at        timestamp    RFC 3339 with an offset, at most 40 characters, a real date
================  ===========  ===========================================================

**Whole numbers.** A number with an integral value written with a fraction (``30.0``, ``1e2``)
is the integer it equals, everywhere: JSON does not tell them apart and a float column (one
with a missing value, in pandas) holds ages as ``30.0``. A fraction (``30.5``) is refused as
``wrong_type``, never rounded; so are strings (``"30"``), booleans and null: no entry point
coerces a value's type. The stream's msgspec records take ``int`` strictly, which keeps the
hot path a single decode; a record it refuses for a float is re-judged here, and one whose
floats are all integral is decoded again with those floats as integers (only such records
pay for it).

**Unknown fields** are not a value's business: each entry point ignores them (and counts
them) or refuses them per ``SEGSTREAM_UNKNOWN_FIELDS``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec

from segstream.errors import InputError

__all__ = [
    "MAX_ID",
    "RULES",
    "STATUSES",
    "TIMESTAMP_PATTERN",
    "FieldRule",
    "check_fields",
    "parse_text",
]

Kind = Literal["integer", "number", "text", "choice", "timestamp"]

MAX_ID: Final = 9_007_199_254_740_991
"""Largest id (2**53 - 1): exact in every JSON parser."""

STATUSES: Final = ("Processing", "Shipped", "Complete", "Returned", "Cancelled")
"""Order statuses thelook knows."""

TIMESTAMP_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
"""RFC 3339 date-time with an explicit offset."""
_TIMESTAMP_RE: Final = re.compile(TIMESTAMP_PATTERN)
_TIMESTAMP_MAX: Final = 40
_SHOWN_CHARS: Final = 40
"""Longest part of a refused string a message repeats (it may be anything a producer sent)."""
_JSON_NUMBER: Final = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def _show(value: object) -> str:
    """``value`` as a message shows it: in JSON's spelling, bounded in length."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        digits = len(str(abs(value))) if abs(value) < 10**_SHOWN_CHARS else None
        return str(value) if digits is not None else "a number too large to show"
    if isinstance(value, float):
        if value != value:
            return "NaN"
        return repr(value) if math.isfinite(value) else "a number too large to show"
    if isinstance(value, str):
        if len(value) > _SHOWN_CHARS:
            return f"{len(value):,} characters starting {json.dumps(value[:_SHOWN_CHARS])}"
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _bound(number: float) -> str:
    return f"{number:,}" if isinstance(number, int) else f"{number:,g}"


@dataclass(frozen=True)
class FieldRule:
    """What one field's value must be. Immutable; shared by every entry point.

    ``minimum``/``maximum`` bound numbers (inclusive); ``min_length``/``max_length`` bound
    text in characters (code points); ``nullable`` lets null stand for a missing value;
    ``refusal`` replaces the reason code of every refusal (``status``: ``unknown_status``).
    """

    kind: Kind
    description: str
    minimum: int | float | None = None
    maximum: int | float | None = None
    min_length: int = 0
    max_length: int | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False
    refusal: str | None = None

    def expects(self) -> str:
        """What a value must be, in the words every message uses."""
        if self.kind == "integer":
            return f"a whole number from {_bound(self.minimum or 0)} to {_bound(self.maximum or 0)}"
        if self.kind == "number":
            return f"a number from {_bound(self.minimum or 0)} to {_bound(self.maximum or 0)}"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "timestamp":
            return "an RFC 3339 date-time with an offset, e.g. 2024-05-01T10:00:00Z"
        text = f"text of {self.min_length} to {self.max_length} characters"
        return text + " or null" if self.nullable else text

    def _refuse(self, reason: str, name: str, value: object) -> InputError:
        message = f"{name} must be {self.expects()}, got {_show(value)}"
        return InputError(self.refusal or reason, name, message)

    def check(self, value: object, name: str) -> Any:
        """``value`` as the field holds it (an integral float as its int), or raises.

        ``name`` is the field's name as the caller's input spells it (``age``,
        ``items[0].brand``); the message starts with it.

        Raises:
            InputError: with the reason code (``wrong_type``, ``out_of_range``,
                ``too_large``, ``invalid_value``, ``bad_timestamp``, or :attr:`refusal`).
        """
        if self.kind in ("integer", "number"):
            return self._check_number(value, name)
        if value is None and self.nullable:
            return None
        if self.kind == "choice":
            if isinstance(value, str) and value in self.choices:
                return value
            raise self._refuse("invalid_value", name, value)
        if not isinstance(value, str):
            raise self._refuse("wrong_type", name, value)
        if self.max_length is not None and len(value) > self.max_length:
            raise self._refuse("too_large", name, value)
        if self.kind == "timestamp":
            if not _TIMESTAMP_RE.match(value):
                raise self._refuse("bad_timestamp", name, value)
            try:
                datetime.fromisoformat(value)
            except ValueError:  # the pattern's shape, but no such date (February 30th)
                raise self._refuse("bad_timestamp", name, value) from None
        elif len(value) < self.min_length:
            raise self._refuse("invalid_value", name, value)
        return value

    def _check_number(self, value: object, name: str) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._refuse("wrong_type", name, value)
        if isinstance(value, float):
            if value != value:  # NaN: no number at all (training's missing-value marker)
                raise self._refuse("wrong_type", name, value)
            if not math.isfinite(value):
                raise self._refuse("out_of_range", name, value)
            if self.kind == "integer":
                if not value.is_integer():
                    raise self._refuse("wrong_type", name, value)
                value = int(value)
        assert self.minimum is not None and self.maximum is not None
        if not self.minimum <= value <= self.maximum:
            raise self._refuse("out_of_range", name, value)
        return value if self.kind == "integer" else float(value)

    def msgspec_type(self) -> Any:
        """The type msgspec decodes this field as, its constraints in a ``msgspec.Meta``.

        Stricter than :meth:`check` in one respect only: an integer is an ``int`` (``30.0``
        is refused there and re-judged by :meth:`check`, see the module docstring).
        """
        if self.kind == "integer":
            return Annotated[int, msgspec.Meta(ge=self.minimum, le=self.maximum)]
        if self.kind == "number":
            return Annotated[float, msgspec.Meta(ge=self.minimum, le=self.maximum)]
        if self.kind == "choice":
            return Literal[self.choices]
        if self.kind == "timestamp":
            return Annotated[
                str, msgspec.Meta(max_length=_TIMESTAMP_MAX, pattern=TIMESTAMP_PATTERN)
            ]
        text = Annotated[str, msgspec.Meta(min_length=self.min_length, max_length=self.max_length)]
        return text | None if self.nullable else text

    def json_schema(self, openapi: bool = False) -> dict[str, Any]:
        """This rule as a JSON Schema (draft 2020-12; OpenAPI 3.0's dialect if ``openapi``)."""
        schema: dict[str, Any]
        if self.kind in ("integer", "number"):
            schema = {"type": self.kind, "minimum": self.minimum, "maximum": self.maximum}
        elif self.kind == "choice":
            schema = {"enum": list(self.choices)}
        elif self.kind == "timestamp":
            schema = {"type": "string", "maxLength": _TIMESTAMP_MAX, "pattern": TIMESTAMP_PATTERN}
        else:
            schema = {"type": "string", "maxLength": self.max_length}
            if self.min_length:
                schema["minLength"] = self.min_length
            if self.nullable:
                if openapi:
                    schema["nullable"] = True
                else:
                    schema["type"] = ["string", "null"]
        return {**schema, "description": self.description}


_ID_RULE: Final = FieldRule("integer", "An identifier, 1 to 2**53-1.", minimum=1, maximum=MAX_ID)
_NAME_RULE: Final = FieldRule(
    "text", "A name as in the data, 1 to 64 characters.", min_length=1, max_length=64
)
_LABEL_RULE: Final = FieldRule(
    "text",
    'At most 200 characters; null or "" is missing: the item is not counted (as in the SQL).',
    max_length=200,
    nullable=True,
)
_FEATURE_LABEL_RULE: Final = FieldRule(
    "text",
    "The user's most frequent value among their order items, 1 to 200 characters.",
    min_length=1,
    max_length=200,
)

RULES: Final[Mapping[str, FieldRule]] = {
    "user_id": _ID_RULE,
    "order_id": _ID_RULE,
    "product_id": _ID_RULE,
    "age": FieldRule("integer", "Whole years.", minimum=0, maximum=120),
    "gender": _NAME_RULE,
    "country": _NAME_RULE,
    "traffic_source": _NAME_RULE,
    "total_orders": FieldRule("integer", "Orders placed so far.", minimum=0, maximum=1_000_000),
    "most_frequent_brand": _FEATURE_LABEL_RULE,
    "most_frequent_category": _FEATURE_LABEL_RULE,
    "brand": _LABEL_RULE,
    "category": _LABEL_RULE,
    "sale_price": FieldRule("number", "Price of the item.", minimum=0, maximum=100_000),
    "status": FieldRule(
        "choice", "The order's status.", choices=STATUSES, refusal="unknown_status"
    ),
    "created_at": FieldRule("timestamp", "RFC 3339 date-time with an explicit offset."),
    "top": FieldRule(
        "integer", "How many similar existing users to return.", minimum=0, maximum=50
    ),
}
"""Every input field's rule, by the field's name in events, ``predict`` and feature frames."""


def check_fields(document: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The fields ``names`` of ``document`` checked against :data:`RULES`, in that order.

    Absent fields are left out (whether one is required is the caller's business).

    Raises:
        InputError: the first field, in ``names``'s order, that breaks its rule.
    """
    return {name: RULES[name].check(document[name], name) for name in names if name in document}


def parse_text(name: str, text: str) -> Any:
    """A command-line option's text as field ``name``'s value, checked.

    For a number field, text spelt as a JSON number is that number (``30``, ``30.0``,
    ``3e1``); any other text stays a string and is refused as JSON's ``"30 years"`` would be.

    Raises:
        InputError: as :meth:`FieldRule.check`.
    """
    rule = RULES[name]
    value: Any = text
    if rule.kind in ("integer", "number") and _JSON_NUMBER.fullmatch(text):
        value = json.loads(text)
    return rule.check(value, name)
