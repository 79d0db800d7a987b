"""The fit check's pure rules, over real recorded Debezium records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segstream.cdc.connector import connector_config
from segstream.cdc.fit import SHAPING_KEYS, config_problems, key_problem
from segstream.settings import load_settings

SAMPLES = Path(__file__).resolve().parents[1] / "stream" / "sources" / "samples"


def _records() -> list[dict[str, str | None]]:
    rows = []
    for path in sorted(SAMPLES.glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    return rows


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def test_the_samples_cover_every_kind_of_record() -> None:
    ops = set()
    for row in _records():
        if row["value"] is not None:
            event = json.loads(row["value"])
            ops.add((event.get("payload") or event)["op"])
    assert ops == {"r", "c", "u", "d", "t"}
    assert any(row["value"] is None for row in _records())  # tombstones


def test_every_recorded_key_fits() -> None:
    for row in _records():
        table = str(row["topic"]).rsplit(".", 1)[-1]
        assert key_problem(table, _bytes(row["key"]), _bytes(row["value"])) is None, row


@pytest.mark.parametrize(
    ("table", "key", "fragment"),
    [
        ("orders", b'{"order_id":3}', 'not {"user_id": <int>}'),
        ("users", b'{"id":3}', 'not {"user_id": <int>}'),
        ("products", b'{"user_id":3}', 'not {"id": <int>}'),
        ("orders", b'{"user_id":"3"}', 'not {"user_id": <int>}'),
        ("orders", b'{"user_id":true}', 'not {"user_id": <int>}'),
        ("orders", b'{"user_id":3,"order_id":4}', 'not {"user_id": <int>}'),
        ("orders", b'{"schema":{"type":"struct"},"payload":{"user_id":3}}', "not"),
        ("orders", b"user-3", "not JSON"),
    ],
)
def test_a_key_of_another_shape_is_named(table: str, key: bytes, fragment: str) -> None:
    problem = key_problem(table, key, b"{}")
    assert problem is not None and fragment in problem and table in problem


def test_a_missing_key_fits_only_a_truncate() -> None:
    assert key_problem("orders", None, b'{"op":"t","before":null,"after":null}') is None
    assert key_problem("orders", None, b'{"schema":{},"payload":{"op":"t"}}') is None
    assert key_problem("orders", None, b'{"op":"c"}') == "a orders change without a key"


def test_the_expected_configuration_has_no_problems() -> None:
    expected = connector_config(load_settings(), "pw")
    assert config_problems({**expected, "database.password": "other"}, expected) == []


@pytest.mark.parametrize("key", SHAPING_KEYS)
def test_each_shaping_setting_that_differs_is_named(key: str) -> None:
    expected = connector_config(load_settings(), "pw")
    actual = {k: v for k, v in expected.items() if k != key}
    (problem,) = config_problems(actual, expected)
    assert f"connector setting {key} is None" in problem
