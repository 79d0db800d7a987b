"""The streaming service as deployed: the Faust worker with its HTTP side, in one process.

The composition root of the online half: it joins the worker (:mod:`segstream.stream.worker`)
and the HTTP side (:mod:`segstream.stream.http`), which the worker itself never imports.
"""

from __future__ import annotations

import faust

from segstream.settings import Settings
from segstream.stream.http.metrics import Metrics
from segstream.stream.http.server import worker_http
from segstream.stream.worker.app import create_app

__all__ = ["create_service"]


def create_service(settings: Settings) -> faust.App:
    """The worker's faust.App reporting to Prometheus metrics and serving the HTTP side."""
    metrics = Metrics()
    return create_app(settings, observer=metrics, extensions=[worker_http(settings, metrics)])
