"""The HTTP side: lookup and predict API, health, Prometheus metrics, live status page, OpenAPI."""

from __future__ import annotations

from segstream.stream.http.live import LiveView, offset_rates
from segstream.stream.http.metrics import CONTENT_TYPE, Metrics, Throughput
from segstream.stream.http.openapi import MAX_TOP, MAX_USER_ID, PREDICT_REQUEST, openapi_document
from segstream.stream.http.server import (
    LIVE,
    create_web_app,
    parse_user_id,
    run_web,
    start_web,
    worker_http,
)
from segstream.stream.http.serving import ServingModel

__all__ = [
    "CONTENT_TYPE",
    "LIVE",
    "MAX_TOP",
    "MAX_USER_ID",
    "PREDICT_REQUEST",
    "LiveView",
    "Metrics",
    "ServingModel",
    "Throughput",
    "create_web_app",
    "offset_rates",
    "openapi_document",
    "parse_user_id",
    "run_web",
    "start_web",
    "worker_http",
]
