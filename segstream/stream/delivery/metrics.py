"""The deliver process's Prometheus series, in a registry of its own (served at ``/metrics``).

==========================================  =========  ==========================================
name                                        type       labels / meaning
==========================================  =========  ==========================================
segstream_delivery_delivered_total          counter    ``destination``: events acknowledged (2xx)
segstream_delivery_failed_total             counter    ``destination``: events dead-lettered
segstream_delivery_retries_total            counter    ``destination``, ``reason``: POSTs retried
                                                       (``status_429``, ``status_5xx``,
                                                       ``timeout``, ``connection``, ``status_4xx``)
segstream_delivery_latency_seconds          histogram  ``destination``: change published to
                                                       Kafka -> destination acknowledged
segstream_delivery_request_seconds          histogram  ``destination``: one POST's wall time
segstream_delivery_backlog_messages         gauge      ``destination``: changes its group
                                                       has not acknowledged (end minus
                                                       committed offset, from Kafka every 5 s;
                                                       the same in every deliver process)
==========================================  =========  ==========================================
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["DeliveryMetrics"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


class DeliveryMetrics:
    """Counters, histograms and gauges per destination; every destination's series exist at 0
    from the start, so an alert on a rate sees a new destination at once."""

    def __init__(self, destinations: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        self.delivered = Counter(
            "segstream_delivery_delivered",
            "Events acknowledged by the destination",
            ["destination"],
            registry=self.registry,
        )
        self.failed = Counter(
            "segstream_delivery_failed",
            "Events dead-lettered after their retries",
            ["destination"],
            registry=self.registry,
        )
        self.retries = Counter(
            "segstream_delivery_retries",
            "POSTs retried, by reason",
            ["destination", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "segstream_delivery_latency_seconds",
            "Change published to Kafka until acknowledged by the destination",
            ["destination"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.request = Histogram(
            "segstream_delivery_request_seconds",
            "Wall time of one POST",
            ["destination"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.backlog = Gauge(
            "segstream_delivery_backlog_messages",
            "Changes the destination's group has not acknowledged (end minus committed offset)",
            ["destination"],
            registry=self.registry,
        )
        for name in destinations:
            self.delivered.labels(name)
            self.failed.labels(name)
            self.backlog.labels(name)

    def exposition(self) -> bytes:
        """The text format (0.0.4) of every series."""
        return generate_latest(self.registry)
