"""The OpenAPI document: its references resolve, it covers every route, the predict schema."""

from __future__ import annotations

import json

import fastjsonschema

from segstream.stream.http.openapi import PREDICT_REQUEST, openapi_document
from segstream.training.features import FEATURE_COLUMNS


def test_predict_request_schema_requires_exactly_the_model_features() -> None:
    assert PREDICT_REQUEST["required"] == list(FEATURE_COLUMNS)
    assert set(PREDICT_REQUEST["properties"]) == {*FEATURE_COLUMNS, "top"}


def test_openapi_document_references_resolve_and_cover_every_route() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    text = json.dumps(document)
    for name in schemas:
        assert f"#/components/schemas/{name}" in text or name == "PredictRequest"
    refs = {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}
    assert refs <= set(schemas)
    assert set(document["paths"]) == {
        "/users/{user_id}",
        "/users/{user_id}/forget",
        "/predict",
        "/segments",
        "/healthz",
        "/readyz",
        "/metrics",
        "/status.json",
        "/",
        "/openapi.json",
    }
    # Response schemas are JSON Schema the validator compiles (nullable aside, an OAS word).
    fastjsonschema.compile(schemas["PredictRequest"])


def test_openapi_document_is_a_fresh_copy_each_time() -> None:
    first = openapi_document()
    first["paths"].clear()
    assert openapi_document()["paths"]
