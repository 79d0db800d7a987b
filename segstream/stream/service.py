"""The streaming service as deployed: the Faust worker with its HTTP side, in one process.

The composition root of the online half: it joins the worker (:mod:`segstream.stream.worker`)
and the HTTP side (:mod:`segstream.stream.http`), which the worker itself never imports, and
tells the HTTP side which webhook delivery groups (:mod:`segstream.stream.delivery`) to show.
"""

from __future__ import annotations

import logging

import faust

from segstream.settings import Settings
from segstream.stream.delivery.config import DeliveryConfigError, destination_names
from segstream.stream.delivery.dead_letters import destination_of
from segstream.stream.delivery.loop import group_of, redrive_group
from segstream.stream.http.delivery import DeliveryGroups
from segstream.stream.http.metrics import Metrics
from segstream.stream.http.server import worker_http
from segstream.stream.worker.app import create_app

__all__ = ["create_service", "delivery_groups"]

log = logging.getLogger(__name__)


def delivery_groups(settings: Settings) -> DeliveryGroups | None:
    """The delivery groups of ``SEGSTREAM_DELIVERY_CONFIG`` for the status page; ``None`` when
    it is unset. A config that cannot be read does not stop the worker (it does not deliver):
    it is logged and the page's Delivery section says why it is empty."""
    path = settings.delivery_config
    if path is None:
        return None
    try:
        names = destination_names(path)
        error = None
    except DeliveryConfigError as exc:
        log.warning("the status page shows no delivery figures: %s", exc)
        names, error = (), str(exc)
    return DeliveryGroups(
        config=str(path),
        destinations=tuple((n, group_of(settings, n)) for n in names),
        dead_letter_topic=settings.topic_delivery_dead_letters,
        redrive_group=redrive_group(settings),
        destination_of=destination_of,
        error=error,
    )


def create_service(settings: Settings) -> faust.App:
    """The worker's faust.App reporting to Prometheus metrics and serving the HTTP side."""
    metrics = Metrics()
    http = worker_http(settings, metrics, delivery=delivery_groups(settings))
    return create_app(settings, observer=metrics, extensions=[http])
