"""The API against its own OpenAPI document: schemathesis generates requests and checks answers.

Every documented operation gets valid inputs, and those with parameters or a body also get
invalid ones, a few dozen examples each (seconds in all); schemathesis' default checks hold:
no 5xx, documented status codes and content types, bodies matching their schemas, invalid
inputs rejected with 4xx, undocumented methods answered 405.

The app requires a token (``SEGSTREAM_HTTP_TOKEN``) here, as a deployed one would: every
request carries it, and schemathesis' own auth check sends requests without it to the
operations the document secures and expects them refused.

The operations are driven through schemathesis' Python API with hypothesis directly rather
than its pytest plugin, whose fixture-loaded schemas do not run under pytest 9.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from pydantic import SecretStr
from schemathesis.generation.modes import GenerationMode

from segstream.stream.http.metrics import Metrics
from segstream.stream.http.openapi import openapi_document
from tests.integration.stream.ops.conftest import World
from tests.integration.stream.ops.support import Http, ServedApp

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
TOKEN = "contract-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def served(world: World, metrics: Metrics) -> Iterator[ServedApp]:
    """The module's app, requiring ``TOKEN``."""
    settings = world.settings.model_copy(update={"http_token": SecretStr(TOKEN)})
    app = ServedApp(settings, metrics=metrics, lag_interval_s=0.3)
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture(scope="module")
def api_schema(served: ServedApp) -> schemathesis.BaseSchema:
    """The document as the server serves it; requests go to that server."""
    return schemathesis.openapi.from_url(served.base + "/openapi.json", headers=AUTH)


def test_without_the_token_only_the_probes_answer(served: ServedApp) -> None:
    anonymous = Http(served.base)
    assert anonymous.json("GET", "/openapi.json")[0] == 401
    assert anonymous.json("GET", "/healthz") == (200, {"status": "alive"})
    status, readiness = anonymous.json("GET", "/readyz")
    assert "ready" in readiness  # the readiness document (200 or 503 while it warms up)
    assert status == (200 if readiness["ready"] else 503)


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
        response = case.call_and_validate(headers=AUTH)
        # 401 is documented, so conformance alone would pass a refused token. (Negative
        # cases may replace the header with a malformed one; those must be refused.)
        sent = response.request.headers.get("Authorization")
        assert (response.status_code == 401) == (sent != AUTH["Authorization"]), response.text

    check()
