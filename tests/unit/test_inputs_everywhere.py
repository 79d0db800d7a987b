"""One validation definition: a value is accepted or refused alike by every entry point.

Each bad value goes through the stream's decoder (a dead letter's reason and detail), the
API's body parser (a 400's message), the CLI's option check (``segstream predict``) and
training's frame check, wherever the entry point carries the field; all must give the same
message, and those that give a reason code the same code.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pandas as pd
import pytest
from aiohttp import web

from segstream.cli.training import PREDICT_OPTIONS, predict_row
from segstream.errors import EventError, InputError
from segstream.stream.domain.events import OrderEvent, UserEvent, parse_event
from segstream.stream.http.openapi import PREDICT_FIELDS
from segstream.stream.http.server import parse_predict_body
from segstream.training.features import FEATURE_COLUMNS, ID_COLUMN
from segstream.training.frame_check import check_frame
from segstream.training.inputs import RULES
from tests.unit.stream.domain.test_events import ORDER, USER
from tests.unit.stream.http.test_server import GOOD

ITEM: dict[str, Any] = ORDER["items"][0]
PREDICT: dict[str, Any] = {**GOOD, "top": 5}
CLI_OPTIONS = {**PREDICT_OPTIONS, "top": "top"}
"""Each input of ``segstream predict`` and the argparse destination of its option."""


def _stream(name: str, value: object) -> tuple[str | None, str] | None:
    if name in USER:
        doc, kind = {**USER, name: value}, UserEvent
    elif name in ORDER:
        doc, kind = {**ORDER, name: value}, OrderEvent
    else:
        return None
    try:
        event, _ = parse_event(json.dumps(doc).encode(), b"42", kind)
    except EventError as exc:
        return exc.reason, exc.detail
    return None, f"accepted as {getattr(event, name)!r}"


def _api(name: str, value: object) -> tuple[str | None, str] | None:
    if name not in PREDICT_FIELDS:
        return None
    try:
        features, top, _ = parse_predict_body(json.dumps({**PREDICT, name: value}).encode())
    except web.HTTPBadRequest as exc:
        return None, str(exc.text)
    return None, f"accepted as {features.get(name, top)!r}"


def _cli(name: str, value: object) -> tuple[str | None, str] | None:
    """``segstream predict``: options are text, so only values text can spell are compared."""
    numeric = RULES[name].kind in ("integer", "number")
    if name not in CLI_OPTIONS or isinstance(value, bool) or value is None:
        return None
    if numeric != isinstance(value, (int, float)):
        return None  # "31" for an age is the number 31 on a command line
    text = json.dumps(value) if numeric else str(value)
    args = argparse.Namespace(**{CLI_OPTIONS[k]: str(v) for k, v in PREDICT.items()})
    setattr(args, CLI_OPTIONS[name], text)
    try:
        row, top = predict_row(args)
    except InputError as exc:
        return exc.reason, exc.message
    return None, f"accepted as {row.get(name, top)!r}"


def _training(name: str, value: object) -> tuple[str | None, str] | None:
    if name not in (ID_COLUMN, *FEATURE_COLUMNS):
        return None
    checked = check_frame(pd.DataFrame({name: [value]}), [name])
    if not checked.refused:  # the frame keeps its dtype; read_features casts to int64
        return None, f"accepted as {int(checked.frame[name].iat[0])!r}"
    ((key, _),) = checked.refused.items()
    return key.split(" ")[1], checked.examples[key]


ENTRY_POINTS = {"stream": _stream, "api": _api, "cli": _cli, "training": _training}

BAD = [
    ("age", -5, "out_of_range", "age must be a whole number from 0 to 120, got -5"),
    ("age", 450, "out_of_range", "age must be a whole number from 0 to 120, got 450"),
    ("age", 30.5, "wrong_type", "age must be a whole number from 0 to 120, got 30.5"),
    ("age", "31", "wrong_type", 'age must be a whole number from 0 to 120, got "31"'),
    ("age", True, "wrong_type", "age must be a whole number from 0 to 120, got true"),
    ("age", None, "wrong_type", "age must be a whole number from 0 to 120, got null"),
    ("total_orders", -3, "out_of_range", "total_orders must be a whole number from 0 to "
     "1,000,000, got -3"),
    ("total_orders", 2.5, "wrong_type", "total_orders must be a whole number from 0 to "
     "1,000,000, got 2.5"),
    ("user_id", 0, "out_of_range", "user_id must be a whole number from 1 to "
     "9,007,199,254,740,991, got 0"),
    ("country", "", "invalid_value", 'country must be text of 1 to 64 characters, got ""'),
    ("gender", 3, "wrong_type", "gender must be text of 1 to 64 characters, got 3"),
    ("traffic_source", "x" * 65, "too_large", "traffic_source must be text of 1 to 64 "
     'characters, got 65 characters starting "' + "x" * 40 + '"'),
    ("most_frequent_brand", "", "invalid_value", "most_frequent_brand must be text of 1 to 200 "
     'characters, got ""'),
    ("top", 51, "out_of_range", "top must be a whole number from 0 to 50, got 51"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "value", "reason", "message"), BAD)
def test_a_bad_value_gets_the_same_reason_and_message_from_every_entry_point(
    name: str, value: object, reason: str, message: str
) -> None:
    answers = {
        entry: answer
        for entry, judge in ENTRY_POINTS.items()
        if (answer := judge(name, value)) is not None
    }
    assert len(answers) >= 2, answers  # compared across at least two entry points
    assert {entry: text for entry, (_, text) in answers.items()} == dict.fromkeys(answers, message)
    reasons = {code for code, _ in answers.values() if code is not None}
    assert reasons == {reason}


@pytest.mark.parametrize(("name", "value"), [("age", 30.0), ("total_orders", 2.0), ("top", 3.0)])
def test_a_whole_number_written_with_a_fraction_is_accepted_everywhere(
    name: str, value: float
) -> None:
    answers = {entry: judge(name, value) for entry, judge in ENTRY_POINTS.items()}
    given = {entry: answer for entry, answer in answers.items() if answer is not None}
    assert len(given) >= 2
    assert set(given.values()) == {(None, f"accepted as {int(value)!r}")}


def test_the_table_covers_every_field_of_every_entry_point() -> None:
    fields = {*UserEvent.__struct_fields__, *OrderEvent.__struct_fields__, *ITEM}
    fields |= {*PREDICT_FIELDS, ID_COLUMN, *FEATURE_COLUMNS} - {"items"}
    assert fields - {"items"} <= set(RULES)
