"""The rules and panels about webhook delivery query what ``segstream deliver`` exports.

Those series come from the deliver process's own registry
(:class:`~segstream.stream.delivery.metrics.DeliveryMetrics`), not from a worker, so the live
check of tests/integration/stream/monitoring/ leaves them to this one: every delivery series
and label a rule or panel reads (recording rules followed) must be in that registry's
exposition, and every series of the registry must be shown or alerted on somewhere.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from segstream.stream.delivery.metrics import DeliveryMetrics
from tests.integration.stream.monitoring.queries import (
    Query,
    alert_queries,
    dashboard_queries,
    recording_rules,
    resolved,
)

PREFIX = "segstream_delivery_"
TARGET_LABELS = {"job", "instance"}
"""Labels Prometheus adds to every scraped series."""


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, with every labelled series of the registry touched once."""
    metrics = DeliveryMetrics(["crm"])
    metrics.retries.labels("crm", "timeout").inc()
    metrics.latency.labels("crm").observe(0.2)
    metrics.request.labels("crm").observe(0.1)
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return {name: labels for name, labels in samples.items() if not name.endswith("_created")}


def delivery_queries() -> list[Query]:
    rules = recording_rules()
    queries = [*rules.values(), *alert_queries(), *dashboard_queries()]
    return [
        q
        for q in (resolved(q, rules) for q in queries)
        if any(s.startswith(PREFIX) for s in q.series)
    ]


def test_every_delivery_series_and_label_queried_is_exported_by_the_deliver_process() -> None:
    known = {name: labels | TARGET_LABELS for name, labels in exported().items()}
    problems = []
    for query in delivery_queries():
        unknown = sorted(query.series - set(known))
        available = set().union(*(known.get(name, set()) for name in query.series)) | query.made
        missing = sorted(query.labels - available)
        if unknown or missing:
            problems.append(f"{query.where}: series {unknown}, labels {missing}: {query.expr}")
    assert not problems, "\n".join(problems)


def test_every_series_the_deliver_process_exports_is_shown_or_alerted_on() -> None:
    queried = {name for q in delivery_queries() for name in q.series}
    families = {
        name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        for name in exported()
    }
    unused = sorted(f for f in families if not any(q.startswith(f) for q in queried))
    assert unused == []


def test_the_delivery_alerts_and_panels_are_there() -> None:
    where = {q.where for q in delivery_queries()}
    assert "alerts.yml: SegstreamDeliveryBacklogGrowing" in where
    assert "alerts.yml: SegstreamDeliveryDeadLetters" in where
    assert {"segstream.json: Delivery backlog", "segstream.json: Delivered changes"} <= where
