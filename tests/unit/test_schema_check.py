"""The tests' fast schema check judges the published events as the 2020-12 files say."""

from __future__ import annotations

import jsonschema
import pytest

from segstream.stream.domain.events import load_schema
from tests.integration.stream.schema_check import SAME_IN_DRAFT_7, _keywords, schema_check

CHANGE = {
    "event_id": "e1",
    "user_id": 7,
    "sequence": 1,
    "previous_segment": None,
    "segment": 2,
    "model_version": "v1",
    "occurred_at": "2026-12-07T13:00:00.000000Z",
    "features": {},
    "source": {"topic": "orders", "partition": 0, "offset": 41},
}


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        (CHANGE, True),
        ({**CHANGE, "segment": None, "previous_segment": 3}, True),
        ({**CHANGE, "user_id": 0}, False),
        ({**CHANGE, "segment": "2"}, False),
        ({**CHANGE, "unexpected": 1}, False),
        ({k: v for k, v in CHANGE.items() if k != "event_id"}, False),
        ({**CHANGE, "event_id": ""}, False),
        ({**CHANGE, "source": {"topic": "orders", "partition": -1, "offset": 41}}, False),
    ],
)
def test_it_judges_as_jsonschemas_own_2020_12_validator(change: dict, valid: bool) -> None:
    assert jsonschema.Draft202012Validator(load_schema("segment_change")).is_valid(change) is valid
    if valid:
        schema_check("segment_change")(change)
    else:
        with pytest.raises(AssertionError, match=r"segment_change\.json refuses"):
            schema_check("segment_change")(change)


@pytest.mark.parametrize(
    "name", ["segment_change", "segment_left", "user_segment", "users", "orders"]
)
def test_every_event_file_uses_only_keywords_draft_7_reads_alike(name: str) -> None:
    assert _keywords(load_schema(name)) <= SAME_IN_DRAFT_7


def test_a_keyword_of_2020_12_only_is_found_even_inside_a_property() -> None:
    schema = {"properties": {"a": {"type": "array", "prefixItems": [{"type": "string"}]}}}
    assert _keywords(schema) - SAME_IN_DRAFT_7 == {"prefixItems"}
