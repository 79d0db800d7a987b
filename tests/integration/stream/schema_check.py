"""The published events checked against their JSON Schema files, fast enough for every event
of a replay: ``jsonschema``'s interpreter took ~80 µs an event, and the checks of one parity
run were about 40% of the test process's CPU (cProfile of ``test_worker.py``'s parity test);
``fastjsonschema``'s compiled check takes a few µs."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import fastjsonschema

from segstream.stream.domain.events import load_schema

__all__ = ["schema_check"]

SAME_IN_DRAFT_7 = frozenset(
    {
        "$id",
        "$schema",
        "additionalProperties",
        "const",
        "description",
        "enum",
        "items",
        "maxItems",
        "maxLength",
        "maximum",
        "minItems",
        "minLength",
        "minimum",
        "pattern",
        "properties",
        "required",
        "title",
        "type",
    }
)
"""Keywords that mean the same in draft 7, which fastjsonschema implements, as in the files'
draft 2020-12. A file using another (``unevaluatedProperties``, ``prefixItems``...) must be
checked with ``jsonschema``'s own 2020-12 validator instead."""


def _keywords(schema: Any) -> set[str]:
    """Every keyword of ``schema`` and its subschemas (property names are not keywords)."""
    if isinstance(schema, list):
        return set().union(*(_keywords(item) for item in schema))
    if not isinstance(schema, dict):
        return set()
    found = set(schema)
    for keyword, value in schema.items():
        if keyword == "properties":
            found |= set().union(*(_keywords(sub) for sub in value.values()))
        elif keyword not in ("const", "enum", "description", "title"):
            found |= _keywords(value)
    return found


@functools.cache
def schema_check(name: str) -> Callable[[Any], None]:
    """A function that fails (AssertionError naming the schema) on a document
    ``load_schema(name)`` refuses."""
    schema = load_schema(name)
    other = _keywords(schema) - SAME_IN_DRAFT_7
    assert not other, f"{name}.json uses {sorted(other)}: check it with jsonschema instead"
    validate = fastjsonschema.compile(schema)

    def check(document: Any) -> None:
        try:
            validate(document)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise AssertionError(f"{name}.json refuses {document!r}: {exc.message}") from exc

    return check
