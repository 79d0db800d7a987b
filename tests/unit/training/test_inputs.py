"""The input table: each rule's verdicts, the screened frame check, and the msgspec types."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest

from segstream.errors import InputError
from segstream.training.frame_check import check_frame
from segstream.training.inputs import RULES, parse_text

SAMPLES: list[Any] = [
    0, 1, -1, 30, 30.0, 30.5, 120, 121, 120.0, 1e20, -0.0, math.inf, math.nan, True, None,
    "30", "", "x", "x" * 64, "x" * 65, "x" * 201, [1], {"a": 1}, 10**30,
]  # fmt: skip


def _plain(value: Any) -> Any:
    """A cell as a JSON parser would give it: pandas' NA is null, NumPy scalars Python's."""
    return None if value is pd.NA else value.item() if hasattr(value, "item") else value


def _verdict(name: str, value: object) -> tuple[str, Any]:
    try:
        return "ok", RULES[name].check(value, name)
    except InputError as exc:
        return exc.reason, exc.message


@pytest.mark.parametrize("name", ["age", "total_orders", "user_id", "country", "brand"])
def test_frame_check_keeps_exactly_the_rows_the_rule_accepts(name: str) -> None:
    """The NumPy screen only narrows the work: its verdicts are the rule's, row by row."""
    rule = RULES[name]
    numbers = [v for v in SAMPLES if isinstance(v, (int, float)) and not isinstance(v, bool)]
    columns = [pd.Series(SAMPLES, dtype=object)]
    if rule.kind == "integer":
        columns.append(pd.Series([v for v in numbers if abs(v) < 2**62], dtype=float))
        columns.append(pd.Series([0, -1, 30, 120, 121, 2**53], dtype=np.int64))
    if rule.kind == "text":  # DuckDB's strings may come as Arrow-backed pandas strings
        texts = [v for v in SAMPLES if isinstance(v, str)]
        columns += [pd.Series([*texts, None], dtype="string"), pd.Series(texts, dtype=object)]
    for column in columns:
        checked = check_frame(pd.DataFrame({name: column}), [name])
        plain = [_plain(v) for v in column]
        verdicts = [_verdict(name, value) for value in plain]
        kept = [v for v, (reason, _) in zip(plain, verdicts, strict=True) if reason == "ok"]
        assert [_plain(v) for v in checked.frame[name]] == pytest.approx(kept, nan_ok=True)
        refused: dict[str, int] = {}
        for reason, _ in verdicts:
            if reason != "ok":
                refused[f"{name} {reason}"] = refused.get(f"{name} {reason}", 0) + 1
        assert checked.refused == refused


@pytest.mark.parametrize("name", ["age", "user_id", "sale_price", "country", "brand", "status"])
def test_msgspec_type_agrees_with_the_rule_except_on_integral_floats(name: str) -> None:
    """msgspec decodes ints strictly; 30.0 is the one thing it refuses that the rule takes
    (the stream re-judges such refusals with the rule)."""
    decoder = msgspec.json.Decoder(RULES[name].msgspec_type())
    for value in SAMPLES:
        if isinstance(value, float) and not math.isfinite(value):
            continue  # JSON has no spelling for them
        accepted_by_rule, converted = _verdict(name, value)
        try:
            decoded = decoder.decode(msgspec.json.encode(value))
            accepted = True
        except msgspec.ValidationError:
            accepted = False
        integral_float = isinstance(value, float) and RULES[name].kind == "integer"
        if accepted_by_rule == "ok" and integral_float:
            assert not accepted, value
        else:
            assert accepted == (accepted_by_rule == "ok"), value
            if accepted:
                assert decoded == converted


@pytest.mark.parametrize(
    ("text", "expected"), [("30", 30), ("30.0", 30), ("3e1", 30), ("-0", 0), ("0.0", 0)]
)
def test_option_text_spelt_as_a_number_is_that_number(text: str, expected: int) -> None:
    value = parse_text("age", text)
    assert value == expected and type(value) is int


@pytest.mark.parametrize("text", ["thirty", "30 ", "0x1e", "+30", "NaN", ""])
def test_option_text_that_is_no_json_number_is_refused_as_a_string(text: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_text("age", text)
    assert caught.value.reason == "wrong_type"
    assert caught.value.message.endswith(f"got {text!r}".replace("'", '"'))


def test_json_schema_of_a_nullable_label_differs_only_in_spelling_for_openapi() -> None:
    assert RULES["brand"].json_schema()["type"] == ["string", "null"]
    openapi = RULES["brand"].json_schema(openapi=True)
    assert (openapi["type"], openapi["nullable"]) == ("string", True)
