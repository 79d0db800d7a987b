"""Validation of input events: every kind of bad input gets its reason, valid ones parse."""

from __future__ import annotations

import ast
import json
import operator
from functools import reduce
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import jsonschema
import pytest

from segstream.errors import EventError
from segstream.stream.domain import events
from segstream.stream.domain.events import (
    MAX_EVENT_BYTES,
    MAX_ITEMS,
    REASONS,
    OrderEvent,
    OrderItem,
    UserEvent,
    load_schema,
    parse_event,
    parse_order,
    parse_user,
    user_key,
)
from segstream.training.inputs import RULES

USER: dict[str, Any] = {
    "user_id": 42,
    "age": 31,
    "gender": "F",
    "country": "Brasil",
    "traffic_source": "Search",
    "created_at": "2023-04-05T06:07:08.123456+00:00",
}
ORDER: dict[str, Any] = {
    "order_id": 7,
    "user_id": 42,
    "status": "Shipped",
    "created_at": "2023-04-06T00:00:00Z",
    "items": [
        {"product_id": 1, "brand": "NygÃ¥rd Collection", "category": "Jeans", "sale_price": 19.5},
        {"product_id": 2, "brand": "Levi's", "category": "Brand New Category", "sale_price": 0},
    ],
}
KEY = b"42"


def _raw(doc: object) -> bytes:
    return json.dumps(doc).encode()


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    doc = dict(base)
    for name, value in changes.items():
        if value is _DROP:
            del doc[name]
        else:
            doc[name] = value
    return doc


def _item(**changes: Any) -> dict[str, Any]:
    return {**ORDER, "items": [_with(ORDER["items"][0], **changes)]}


_DROP = object()


def test_valid_user_parses_into_its_fields() -> None:
    event = parse_user(_raw(USER), KEY)
    assert event == UserEvent(42, 31, "F", "Brasil", "Search", "2023-04-05T06:07:08.123456+00:00")


def test_valid_order_parses_with_unseen_category_and_non_ascii_brand() -> None:
    event = parse_order(_raw(ORDER), KEY)
    assert event == OrderEvent(
        order_id=7,
        user_id=42,
        status="Shipped",
        created_at="2023-04-06T00:00:00Z",
        items=(
            OrderItem(1, "NygÃ¥rd Collection", "Jeans", 19.5),
            OrderItem(2, "Levi's", "Brand New Category", 0.0),
        ),
    )


def test_missing_brand_or_category_is_valid() -> None:
    doc = {**ORDER, "items": [_with(ORDER["items"][0], brand=None, category="")]}
    event = parse_order(_raw(doc), KEY)
    assert event.items == (OrderItem(1, None, "", 19.5),)


def test_whole_numbers_written_with_a_fraction_are_their_ints() -> None:
    """The input table's policy: 7.0 is 7 (as JSON Schema says), in every integer field."""
    raw = _raw(
        {
            **_with(ORDER, order_id=7.0, user_id=42.0),
            "items": [
                _with(ORDER["items"][0], product_id=1e0),
                _with(ORDER["items"][1], product_id=2.0),
            ],
        }
    )
    event = parse_order(raw, KEY)
    assert event == parse_order(_raw(ORDER), KEY)
    assert type(event.order_id) is int and type(event.items[1].product_id) is int
    user = parse_user(_raw(_with(USER, age=31.0)), KEY)
    assert user.age == 31 and type(user.age) is int


@pytest.mark.parametrize(
    ("doc", "reason", "detail"),
    [
        (_with(USER, age=31.5), "wrong_type", "age must be a whole number from 0 to 120, got 31.5"),
        (
            _with(USER, age=130.0),
            "out_of_range",
            "age must be a whole number from 0 to 120, got 130",
        ),
        (
            _with(USER, user_id=42.0, age=-2.0),
            "out_of_range",
            "age must be a whole number from 0 to 120, got -2",
        ),
    ],
)
def test_a_fraction_or_a_float_out_of_range_is_refused_in_the_tables_words(
    doc: dict[str, Any], reason: str, detail: str
) -> None:
    with pytest.raises(EventError) as caught:
        parse_user(_raw(doc), KEY)
    assert (caught.value.reason, caught.value.detail) == (reason, detail)


@pytest.mark.parametrize(
    ("parse", "doc", "unknown"),
    [
        (UserEvent, _with(USER, email="a@b.c"), ("email",)),
        (OrderEvent, _item(colour="red", size={"eu": 38}), ("items[].colour", "items[].size")),
        (OrderEvent, {**_item(colour="red"), "coupon": None}, ("coupon", "items[].colour")),
    ],
)
def test_unknown_fields_are_ignored_and_named_or_dead_lettered(
    parse: type[UserEvent] | type[OrderEvent], doc: dict[str, Any], unknown: tuple[str, ...]
) -> None:
    known = {k: v for k, v in doc.items() if k not in unknown}
    if "items" in doc:
        known["items"] = [
            {k: v for k, v in i.items() if k in ORDER["items"][0]} for i in doc["items"]
        ]
    event, found = parse_event(_raw(doc), KEY, parse)
    assert found == unknown
    assert event == parse_event(_raw(known), KEY, parse)[0]
    with pytest.raises(EventError) as caught:
        parse_event(_raw(doc), KEY, parse, "dead_letter")
    assert caught.value.reason == "unexpected_field"
    assert repr(unknown[0]) in caught.value.detail


def test_a_known_event_has_no_unknown_fields() -> None:
    assert parse_event(_raw(ORDER), KEY, OrderEvent, "dead_letter")[1] == ()


def test_user_key_is_the_decimal_user_id() -> None:
    assert user_key(1234567) == b"1234567"


USER_CASES = [
    (b"\xff\xfe not utf-8", "not_utf8"),
    (_raw(USER).replace(b'"F"', b'"\xc3\x28"'), "not_utf8"),  # the operator's fault run
    (_raw(USER).replace(b'"F"', b'"\xed\xa0\x80"'), "not_utf8"),  # a surrogate as UTF-8
    (_raw(USER).replace(b'"F"', b'"\xc0\xaf"'), "not_utf8"),  # an overlong encoding
    (_raw(USER).replace(b'"gender"', b'"gen\xffder"'), "not_utf8"),  # in a key
    (_raw(USER).replace(b'"age": 31', b'"age": \xff31'), "not_utf8"),  # outside strings
    (_raw(_with(USER, age="x")).replace(b'"F"', b'"\xff"'), "not_utf8"),  # beats wrong_type
    (_raw(USER).replace(b'"F"', b'"\\ud800"'), "not_utf8"),  # lone high surrogate escape
    (_raw(USER).replace(b'"F"', b'"\\udc00x"'), "not_utf8"),  # lone low surrogate escape
    (b"\xef\xbb\xbf" + _raw(USER), "not_json"),  # a byte order mark
    (_raw(USER) + b"\x00", "not_json"),  # a NUL after the document
    (_raw(USER).replace(b'"F"', b'"F\x00"'), "not_json"),  # a raw NUL in a string
    (_raw(USER) + b" {}", "not_json"),  # trailing data
    (b"", "not_json"),
    (_raw(USER).replace(b'"age": 31', b'"age": ' + b"9" * 5000), "out_of_range"),
    (_raw(USER).replace(b'"age": 31', b'"age": 1e400'), "out_of_range"),
    (_raw(USER).replace(b'"age": 31', b'"age": -Infinity'), "not_json"),
    (b"[" * 30_000 + b"]" * 30_000, "not_object"),  # deep nesting
    (_raw(USER).replace(b'"age": 31', b'"age": ' + b"[" * 30_000 + b"]" * 30_000), "wrong_type"),
    (_raw(USER).replace(b'"age": 31', b'"age": 31, "age": 32'), "invalid_value"),
    (_raw(USER).replace(b'"age": 31', b'"age": 31, "\\u0061ge": 31'), "invalid_value"),
    (b'{"user_id": 42,', "not_json"),
    (None, "not_json"),
    (b"[1, 2]", "not_object"),
    (_raw(_with(USER, age=_DROP)), "missing_field"),
    (_raw(_with(USER, age="31")), "wrong_type"),
    (_raw(_with(USER, age=True)), "wrong_type"),
    (_raw(_with(USER, age=31.5)), "wrong_type"),
    (_raw(_with(USER, age=-1)), "out_of_range"),
    (_raw(_with(USER, age=450)), "out_of_range"),
    (_raw(_with(USER, user_id=0)), "out_of_range"),
    (_raw(_with(USER, country="x" * 65)), "too_large"),
    (_raw(_with(USER, country="")), "invalid_value"),
    (
        _raw(_with(USER, email=[[[[[[1]]]]]]))
        .replace(b"[[[[[[1", b"[" * 30_000 + b"1")
        .replace(b"]]]]]]", b"]" * 30_000),
        "invalid_value",
    ),  # an unknown field too deep to skip
    (_raw(_with(USER, created_at="yesterday")), "bad_timestamp"),
    (_raw(_with(USER, created_at="2023-02-30T00:00:00Z")), "bad_timestamp"),
    (_raw(_with(USER, created_at="2023-02-03T00:00:00")), "bad_timestamp"),
]

ORDER_CASES = [
    (b"NaN", "not_json"),
    (_raw(ORDER).replace(b"19.5", b"NaN"), "not_json"),
    (_raw(ORDER).replace(b"19.5", b"Infinity"), "not_json"),
    (b'"an order"', "not_object"),
    (_raw(_with(ORDER, items=_DROP)), "missing_field"),
    (_raw(_with(ORDER, items=[])), "empty_items"),
    (_raw(_with(ORDER, items=[ORDER["items"][0]] * 101)), "too_large"),
    (_raw(_with(ORDER, status="Lost")), "unknown_status"),
    (_raw(_with(ORDER, status=None)), "unknown_status"),
    (_raw(_with(ORDER, user_id="42")), "wrong_type"),
    (_raw(_with(ORDER, items={"product_id": 1})), "wrong_type"),
    (_raw(_item(sale_price=-0.01)), "out_of_range"),
    (_raw(_item(sale_price=1e12)), "out_of_range"),
    (_raw(_item(sale_price="19.5")), "wrong_type"),
    (_raw(_item(product_id=-3)), "out_of_range"),
    (_raw(_item(brand=_DROP)), "missing_field"),
    (_raw(_item(brand="b" * 201)), "too_large"),
    (_raw(_item(category=3)), "wrong_type"),
    (_raw(_with(ORDER, created_at=12)), "wrong_type"),
    (_raw(_item(sale_price=1)).replace(b"1}", b"1e999}"), "out_of_range"),
    (_raw(ORDER).replace(b'"Jeans"', b'"Jeans", "category": "Socks"', 1), "invalid_value"),
    (_raw(ORDER).replace(b'"status"', b'"status": "Shipped", "status"'), "invalid_value"),
    (
        _raw(ORDER).replace(
            b'"items": [', b'"items": [' + _raw(ORDER["items"][0]) + b'], "items": ['
        ),
        "invalid_value",
    ),
    (_raw(_item(brand="a:b")).replace(b'"a:b"', b'"a:b", "brand": "c:d"'), "invalid_value"),
    (b'{"pad": "' + b"x" * MAX_EVENT_BYTES + b'"}', "too_large"),
]


@pytest.mark.parametrize(("raw", "reason"), USER_CASES)
def test_bad_user_is_rejected_with_its_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(EventError) as caught:
        parse_user(raw, KEY)
    assert caught.value.reason == reason
    assert caught.value.detail


@pytest.mark.parametrize(("raw", "reason"), ORDER_CASES)
def test_bad_order_is_rejected_with_its_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(EventError) as caught:
        parse_order(raw, KEY)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (_raw(USER).replace(b'"age": 31', b'"age": 31, "age": 31'), "age"),
        (_raw(ORDER).replace(b'"brand"', b'"\\u0062rand": "x", "brand"', 1), "brand"),
        (_raw(ORDER).replace(b'"status"', b'"status": "Complete", "st\\u0061tus"'), "status"),
    ],
)
def test_a_repeated_key_is_named_in_the_detail(raw: bytes, key: str) -> None:
    with pytest.raises(EventError) as caught:
        (parse_user if b"items" not in raw else parse_order)(raw, KEY)
    assert caught.value.reason == "invalid_value"
    assert f"key {key!r} appears more than once" in caught.value.detail


@pytest.mark.parametrize(
    "doc",
    [
        _with(USER, gender="a:b", country="x:y:z", created_at="2023-04-05T06:07:08+05:30"),
        _item(brand='Brand: \u00e9 "quoted"', category="C:\\path"),
        _item(brand=None, category=""),
    ],
)
def test_colons_and_escapes_in_strings_are_no_repeated_keys(doc: dict[str, Any]) -> None:
    """The repeated-key check counts ``:``; strings with colons, escaped or not, are fine."""
    parse = parse_order if "items" in doc else parse_user
    raw = _raw(doc)  # separators ", " and ": "; no string here holds '": '
    escaped = raw.replace(b'": ', b"\x01").replace(b":", b"\\u003a").replace(b"\x01", b'": ')
    assert escaped.count(b"\\u003a") >= 2
    forms = (raw, json.dumps(doc, ensure_ascii=False).encode(), escaped)
    events = [parse(form, KEY) for form in forms]
    assert events == [events[0]] * 3
    assert events[0].created_at == doc["created_at"]


def test_not_utf8_names_the_offending_byte() -> None:
    with pytest.raises(EventError) as caught:
        parse_user(b'{"gender":"\xc3\x28"}', KEY)
    assert caught.value.detail == "byte 0xc3 at offset 11 is not UTF-8 (invalid continuation byte)"


@pytest.mark.parametrize("key", [None, b"43", b"042", b""])
def test_event_keyed_by_another_user_is_rejected(key: bytes | None) -> None:
    for parse, doc in ((parse_user, USER), (parse_order, ORDER)):
        with pytest.raises(EventError) as caught:
            parse(_raw(doc), key)
        assert caught.value.reason == "key_mismatch"


def test_every_reason_used_by_the_cases_is_declared() -> None:
    used = {reason for _, reason in USER_CASES + ORDER_CASES} | {"key_mismatch"}
    used |= {"unexpected_field"}  # SEGSTREAM_UNKNOWN_FIELDS=dead_letter, tested above
    assert used == set(REASONS)


def _plain_document(raw: bytes | None) -> Any:
    """``raw`` as a Python value, or None if it is too large, not JSON or repeats a key (which
    JSON Schema cannot see)."""
    if raw is None or len(raw) > MAX_EVENT_BYTES:
        return None
    repeats: list[bool] = []

    def pairs_to_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        repeats.append(len({name for name, _ in pairs}) < len(pairs))
        return dict(pairs)

    try:
        doc = json.loads(raw, object_pairs_hook=pairs_to_dict)
    except (ValueError, RecursionError):
        return None
    return None if any(repeats) else doc


@pytest.mark.parametrize(
    ("schema", "cases", "valid"),
    [("users", USER_CASES, USER), ("orders", ORDER_CASES, ORDER)],
)
def test_parser_agrees_with_jsonschema_on_the_schema_files(
    schema: str, cases: list[tuple[bytes | None, str]], valid: dict[str, Any]
) -> None:
    """The hot-path parser and ``jsonschema`` with the files judge every sample alike.

    Not compared: what JSON Schema cannot express (dates that do not exist, the key) or
    does not see (bytes that are not JSON, the size limit).
    """
    reference = jsonschema.Draft202012Validator(load_schema(schema))
    parse = parse_user if schema == "users" else parse_order
    extra = [
        _with(valid, created_at="2023-04-05T06:07:08+05:30"),
        _with(valid, created_at="2023-04-05 06:07:08Z"),
        _with(valid, user_id=2**53),
        _with(valid, user_id=None),
        {**valid, "items": [{**ORDER["items"][0], "brand": ""}]} if schema == "orders" else valid,
    ]
    docs = [valid, *extra] + [
        doc
        for raw, reason in cases
        if reason not in {"not_json", "not_utf8", "not_object"}
        and (doc := _plain_document(raw)) is not None
    ]
    for doc in docs:
        try:
            parse(_raw(doc), KEY)
            accepted = True
        except EventError as exc:
            if exc.reason == "key_mismatch":
                continue
            accepted = exc.reason == "bad_timestamp" and reference.is_valid(doc)
        assert accepted == reference.is_valid(doc), doc


@pytest.mark.parametrize(
    "name", ["users", "orders", "segment_change", "segment_left", "user_segment"]
)
def test_schema_files_are_valid_json_schemas(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(load_schema(name))


@pytest.mark.parametrize("name", ["users", "orders"])
def test_schema_files_restate_the_input_table(name: str) -> None:
    """Producers read the files; the parser reads the table: a field's rule is the same."""
    schema = load_schema(name)
    properties = dict(schema["properties"])
    if name == "orders":
        items = properties.pop("items")
        assert (items["minItems"], items["maxItems"]) == (1, MAX_ITEMS)
        for field, rule in items["items"]["properties"].items():
            assert rule == RULES[field].json_schema(), field
        assert items["items"]["required"] == list(OrderItem.__struct_fields__)
    for field, rule in properties.items():
        assert rule == RULES[field].json_schema(), field
    record = UserEvent if name == "users" else OrderEvent
    assert schema["required"] == list(record.__struct_fields__)
    assert "additionalProperties" not in schema  # unknown fields: SEGSTREAM_UNKNOWN_FIELDS


def _runtime_python_type(decoded: Any) -> Any:
    """``Annotated[int, Meta(...)]`` -> ``int``; ``Literal["a", "b"]`` -> ``str``; unions kept."""
    if get_origin(decoded) is Annotated:
        return get_args(decoded)[0]
    if get_origin(decoded) is Literal:
        (kind,) = {type(choice) for choice in get_args(decoded)}
        return kind
    if get_origin(decoded) in (Union, UnionType):
        return reduce(operator.or_, (_runtime_python_type(arm) for arm in get_args(decoded)))
    return decoded


def test_the_type_checkers_view_of_each_field_is_the_type_its_rule_decodes_to() -> None:
    # events.py gives mypy plain aliases under TYPE_CHECKING (it cannot evaluate RULES): read
    # them from the source and compare with what msgspec decodes at run time.
    source = Path(events.__file__).read_text(encoding="utf-8")
    (block,) = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    ]
    static = {
        node.target.id: eval(ast.unparse(node.value))  # builtin type expressions only
        for node in block.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    assert static, "no aliases found under TYPE_CHECKING in events.py"
    for name, expected in static.items():
        assert _runtime_python_type(getattr(events, name)) == expected, name
