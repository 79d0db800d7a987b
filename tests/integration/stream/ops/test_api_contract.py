"""The API against its own OpenAPI document: schemathesis generates requests and checks answers.

Every documented operation gets valid inputs, and those with parameters or a body also get
invalid ones, a few dozen examples each (seconds in all); schemathesis' default checks hold:
no 5xx, documented status codes and content types, bodies matching their schemas, invalid
inputs rejected with 4xx, undocumented methods answered 405.

The operations are driven through schemathesis' Python API with hypothesis directly rather
than its pytest plugin, whose fixture-loaded schemas do not run under pytest 9.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode

from segstream.stream.http.openapi import openapi_document
from tests.integration.stream.ops.support import ServedApp

DOCUMENT = openapi_document()
CASES = [
    (path, method.upper(), mode)
    for path, item in DOCUMENT["paths"].items()
    for method, op in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # Only parameters and bodies can be made invalid.
    if mode is GenerationMode.POSITIVE or op.get("parameters") or op.get("requestBody")
]
EXAMPLES = 30


@pytest.fixture(scope="module")
def api_schema(served: ServedApp) -> schemathesis.BaseSchema:
    """The document as the server serves it; requests go to that server."""
    return schemathesis.openapi.from_url(served.base + "/openapi.json")


def test_openapi_document_is_served_as_written(served: ServedApp) -> None:
    status, document = served.json("GET", "/openapi.json")
    assert status == 200
    assert document == DOCUMENT


@pytest.mark.parametrize(
    ("path", "method", "mode"), CASES, ids=[f"{m} {p} {g.value}" for p, m, g in CASES]
)
def test_operation_conforms_to_the_document(
    api_schema: schemathesis.BaseSchema, path: str, method: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate()

    check()
