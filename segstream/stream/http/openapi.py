"""The HTTP API's OpenAPI 3.0 document, written as data and served at ``GET /openapi.json``.

It is the contract the integration tests hold the server to (schemathesis generates requests
from it and checks every response against it), and the request body schema of ``POST
/predict`` is compiled from it to validate bodies, so the document and the checks cannot
drift apart. The request's fields and their bounds are the input table's
(:data:`segstream.training.inputs.RULES`), the rules every entry point checks values with.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from segstream.stream.http.auth import is_public
from segstream.training.features import FEATURE_COLUMNS
from segstream.training.inputs import MAX_ID, RULES

__all__ = ["MAX_TOP", "MAX_USER_ID", "PREDICT_FIELDS", "PREDICT_REQUEST", "openapi_document"]

MAX_USER_ID: Final = MAX_ID
"""Largest user_id (2**53 - 1, as the input table: exact in every JSON parser)."""
MAX_TOP: Final = RULES["top"].maximum
"""Most similar users ``POST /predict`` returns."""
PREDICT_FIELDS: Final = (*FEATURE_COLUMNS, "top")
"""The fields of a ``POST /predict`` body, in the order they are checked."""


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


PREDICT_REQUEST: Final[dict[str, Any]] = {
    "type": "object",
    "description": "A new customer's features. Other fields are ignored (SEGSTREAM_UNKNOWN_FIELDS="
    "dead_letter refuses them with 400); a whole number may be written with a fraction (30.0).",
    "required": list(FEATURE_COLUMNS),
    "properties": {
        **{name: RULES[name].json_schema(openapi=True) for name in PREDICT_FIELDS},
        "top": {**RULES["top"].json_schema(openapi=True), "default": 5},
    },
}
"""JSON Schema of the ``POST /predict`` body: the seven features, and ``top``."""

_FEATURES_STORED: Final = {
    "type": "object",
    "description": "The user's features as the stream knows them; null where not known yet.",
    "required": list(FEATURE_COLUMNS),
    "properties": {
        "age": _nullable({"type": "integer"}),
        "gender": _nullable({"type": "string"}),
        "country": _nullable({"type": "string"}),
        "traffic_source": _nullable({"type": "string"}),
        "total_orders": {"type": "integer", "minimum": 0},
        "most_frequent_brand": _nullable({"type": "string"}),
        "most_frequent_category": _nullable({"type": "string"}),
    },
}

_DISTANCES: Final = {
    "type": "array",
    "items": {"type": "number", "minimum": 0},
    "description": "Euclidean distance to each segment's centre in PCA space; index = segment.",
}

_SCHEMAS: Final[dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "What is wrong."}},
    },
    "User": {
        "type": "object",
        "required": [
            "user_id",
            "segment",
            "model_version",
            "updated_at",
            "assignable",
            "features",
            "distances",
            "distances_model_version",
            "unseen_columns",
            "pending_changes",
        ],
        "properties": {
            "user_id": {"type": "integer", "minimum": 1},
            "segment": _nullable(
                {"type": "integer", "minimum": 0, "description": "Last published segment."}
            ),
            "model_version": _nullable({"type": "string", "description": "Model of `segment`."}),
            "drift_epoch": _nullable(
                {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Drift mode: the drift epoch the user was last assigned "
                    "with (`segstream assign --with-drift --epoch` reproduces `segment`); "
                    "null without drift.",
                }
            ),
            "updated_at": _nullable(
                {"type": "string", "description": "RFC 3339 time of the segment; null: unknown."}
            ),
            "assignable": {"type": "boolean", "description": "Every feature is known."},
            "features": _FEATURES_STORED,
            "distances": _nullable(_DISTANCES),
            "distances_model_version": _nullable(
                {"type": "string", "description": "Model the distances were computed with."}
            ),
            "unseen_columns": {"type": "array", "items": {"type": "string"}},
            "pending_changes": {
                "type": "integer",
                "minimum": 0,
                "description": "Changes queued but not yet acknowledged by Kafka.",
            },
        },
    },
    "LeaveQueued": {
        "type": "object",
        "additionalProperties": False,
        "required": ["user_id", "topic", "partition", "offset", "status"],
        "properties": {
            "user_id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
            "topic": {"type": "string", "description": "The users topic."},
            "partition": {"type": "integer", "minimum": 0},
            "offset": {"type": "integer", "minimum": 0},
            "status": {"type": "string", "enum": ["queued"]},
        },
    },
    "PredictRequest": PREDICT_REQUEST,
    "Prediction": {
        "type": "object",
        "required": [
            "model_version",
            "segment",
            "components",
            "distances",
            "unseen_columns",
            "fallbacks",
            "similar_users",
        ],
        "properties": {
            "model_version": {"type": "string"},
            "segment": {"type": "integer", "minimum": 0},
            "components": {"type": "array", "items": {"type": "number"}, "minItems": 2},
            "distances": _DISTANCES,
            "unseen_columns": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Columns whose value training never saw (encoded as fallbacks).",
            },
            "fallbacks": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Value each unseen column was encoded as.",
            },
            "similar_users": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["user_id", "distance", "segment"],
                    "properties": {
                        "user_id": {"type": "integer"},
                        "distance": {
                            "type": "number",
                            "minimum": 0,
                            "description": "Euclidean distance to the customer in the model's "
                            "component space (the units of `components`).",
                        },
                        "segment": {"type": "integer", "minimum": 0},
                    },
                },
                "description": "The training users of the model version nearest to the "
                "customer in component space (the metric k-means assigns by), nearest first; "
                "equal distances by user_id.",
            },
        },
    },
    "Segments": {
        "type": "object",
        "required": [
            "model_version",
            "k",
            "segments",
            "unassigned",
            "other_versions",
            "counted_at",
        ],
        "properties": {
            "model_version": {"type": "string"},
            "k": {"type": "integer", "minimum": 1},
            "segments": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["segment", "users"],
                    "properties": {
                        "segment": {"type": "integer", "minimum": 0},
                        "users": {"type": "integer", "minimum": 0},
                    },
                },
            },
            "unassigned": {
                "type": "integer",
                "minimum": 0,
                "description": "Users known to the stream but not assignable yet.",
            },
            "other_versions": {
                "type": "integer",
                "minimum": 0,
                "description": "Users whose segment is still one of an older model.",
            },
            "counted_at": {"type": "number", "description": "Unix time of the count."},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["alive"]}},
    },
    "Readiness": {
        "type": "object",
        "required": ["ready", "reasons", "checks"],
        "properties": {
            "ready": {"type": "boolean"},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "checks": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["ok", "detail"],
                    "properties": {"ok": {"type": "boolean"}, "detail": {"type": "string"}},
                },
            },
        },
    },
    "Status": {
        "type": "object",
        "required": [
            "generated_at",
            "health",
            "model",
            "throughput",
            "lag",
            "populations",
            "changes",
        ],
        "description": "Everything the status page shows; see the README for the fields.",
        "properties": {
            "generated_at": {"type": "number"},
            "health": {"$ref": "#/components/schemas/Readiness"},
            "model": {"type": "object"},
            "throughput": {"type": "object"},
            "lag": {"type": "object"},
            "populations": {"type": "object"},
            "changes": {"type": "object"},
        },
    },
}

_USER_ID_PARAM: Final = {
    "name": "user_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_USER_ID},
}

_PATHS: Final[dict[str, Any]] = {
    "/users/{user_id}": {
        "get": {
            "summary": "A user's current segment, features and distance to each centre",
            "operationId": "getUser",
            "parameters": [_USER_ID_PARAM],
            "responses": {
                "200": _json("The user as the stream knows them.", "User"),
                "400": _error("user_id is not an integer from 1 to 2**53-1."),
                "404": _error("The stream has never seen this user."),
                "503": _error("Redis is unreachable."),
            },
        }
    },
    "/users/{user_id}/forget": {
        "post": {
            "summary": "Make a user leave: every key of theirs erased, a leave event published",
            "description": "Sends a tombstone keyed by the user to the users topic, as `segstream "
            "forget` does, and answers once the broker acknowledged it. The worker owning the "
            "user's partition then erases every key segstream holds for them, publishes a leave "
            "event (schemas/segment_left.json) on segment-changes and a tombstone on "
            "user-segments; a later event of the user starts them afresh. Repeating the call is "
            "harmless (a leave of a user segstream does not hold does nothing).",
            "operationId": "forgetUser",
            "parameters": [_USER_ID_PARAM],
            "responses": {
                "202": _json("The leave is queued for the user's worker.", "LeaveQueued"),
                "400": _error("user_id is not an integer from 1 to 2**53-1."),
                "409": _error(
                    "SEGSTREAM_SOURCE=cdc: the database is the source; delete the users row."
                ),
                "503": _error(
                    "Kafka is unreachable or refused the tombstone, or the users topic does "
                    "not exist (no worker of this app ran)."
                ),
            },
        }
    },
    "/predict": {
        "post": {
            "summary": "Assign a new customer and find the most similar existing users",
            "operationId": "predict",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
                },
            },
            "responses": {
                "200": _json("The customer's segment.", "Prediction"),
                "400": _error("The body is not JSON or not a valid feature object."),
                "413": _error("The body is larger than 1 MiB."),
                "503": _error("No model is loaded."),
            },
        }
    },
    "/segments": {
        "get": {
            "summary": "Users per segment under the model in use",
            "operationId": "getSegments",
            "responses": {
                "200": _json("Population of each segment.", "Segments"),
                "503": _error("No model is loaded, or Redis is unreachable."),
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "Liveness: the process answers",
            "operationId": "healthz",
            "responses": {"200": _json("Alive.", "Health")},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: Kafka and Redis reachable, model loaded",
            "operationId": "readyz",
            "responses": {
                "200": _json("Ready.", "Readiness"),
                "503": _json("Not ready; `reasons` says why.", "Readiness"),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics (text format 0.0.4)",
            "operationId": "metrics",
            "responses": {
                "200": {
                    "description": "Every series; see the README.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/status.json": {
        "get": {
            "summary": "What the status page shows: throughput, lag, populations, changes",
            "operationId": "status",
            "responses": {"200": _json("The live figures.", "Status")},
        }
    },
    "/": {
        "get": {
            "summary": "The status page (HTML; its script polls /status.json)",
            "operationId": "statusPage",
            "responses": {
                "200": {
                    "description": "The page.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.0 document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    },
}


BEARER_SCHEME: Final[dict[str, Any]] = {
    "type": "http",
    "scheme": "bearer",
    "description": (
        "The worker's SEGSTREAM_HTTP_TOKEN, when it is set (otherwise nothing is checked). "
        "/healthz, /readyz and the status page's shell are served without it."
    ),
}


def _secured(paths: dict[str, Any]) -> dict[str, Any]:
    """``paths`` with the bearer requirement lifted from the public paths and a 401 on the
    others (see :mod:`segstream.stream.http.auth`)."""
    secured = copy.deepcopy(paths)
    for path, operations in secured.items():
        for operation in operations.values():
            if is_public(path):
                operation["security"] = []
            else:
                operation["responses"]["401"] = _error(
                    "A token is required (SEGSTREAM_HTTP_TOKEN) and the request has none or "
                    "another one."
                )
    return secured


def openapi_document(version: str = "0.1.0") -> dict[str, Any]:
    """A fresh copy of the OpenAPI 3.0.3 document (callers may change it)."""
    return copy.deepcopy(
        {
            "openapi": "3.0.3",
            "info": {
                "title": "segstream",
                "version": version,
                "description": (
                    "Which segment is each customer in, right now: lookups of the stream's "
                    "state, predictions for new customers, and the service's health and "
                    "metrics. Errors are JSON objects with an `error` message."
                ),
            },
            "security": [{"bearer": []}],
            "paths": _secured(_PATHS),
            "components": {"schemas": _SCHEMAS, "securitySchemes": {"bearer": BEARER_SCHEME}},
        }
    )
