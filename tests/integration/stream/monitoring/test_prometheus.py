"""The rules and the dashboard against a real worker and a real Prometheus.

One ``segstream worker`` (drift mode, so the drift series are exported too) on the session's
Kafka and a Redis of this module's own processes a slice of the dataset. Then:

* every series and label that deploy/prometheus/alerts.yml and deploy/grafana/segstream.json
  query is one this worker exports on its live ``/metrics``;
* Debian's Prometheus, started by the product's own :class:`PrometheusServer` on a free port
  with its own data directory, scrapes the worker with the rule file loaded (``for:`` windows
  shortened by :func:`with_for`, expressions as committed); Redis is stopped and
  ``SegstreamWorkerNotReady{check="redis"}`` goes to firing in Prometheus's own alerts API,
  then Redis is started again and the alert resolves.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from segstream.services.alert_rules import load_rules, with_for, write_rules
from segstream.services.prometheus import PrometheusServer
from segstream.services.redis import RedisServer
from tests.integration.stacks import private_settings, start_again
from tests.integration.stream.conftest import (
    Dataset,
    WorkerProcess,
    app_settings,
    wait_until_consumed,
)
from tests.integration.stream.monitoring.queries import (
    Query,
    alert_queries,
    dashboard_queries,
    recording_rules,
    resolved,
)
from tests.integration.stream.ops.conftest import user_slice
from tests.integration.stream.ops.support import publish
from tests.ports import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

PROMETHEUS_OWN = {"up": {"job", "instance"}}
"""Series Prometheus makes itself for every target, with their labels."""
TARGET_LABELS = {"job", "instance"}
"""Labels Prometheus adds to every scraped series."""
PENDING: dict[str, str] = {}
"""Series a rule already queries that another branch adds to the worker: the test fails once
the worker declares one of them, to say: drop it from here, so it is checked like the rest."""
UNSAMPLED = {"segstream_redis_degraded": {"primary"}}
"""Series declared on ``/metrics`` with no sample on this test's healthy single Redis (set
per primary only while one is short of replicas), with the labels they carry when set."""


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this module's own: the alert test stops and restarts it."""
    server = RedisServer(*private_settings(tmp_path_factory.mktemp("monitoring-redis")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def worker(
    kafka_bootstrap: str,
    own_redis: RedisServer,
    dataset: Dataset,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """A drift-mode worker that has processed every event of 200 users."""
    tmp = tmp_path_factory.mktemp("monitoring-worker")
    settings = app_settings(
        kafka_bootstrap,
        own_redis.url,
        model_dir=dataset.models_dir,
        data_dir=tmp / "worker-data",
        drift="river",
    )
    worker = WorkerProcess(settings, tmp / "worker.log")
    try:
        publish(settings, user_slice(dataset, 200, 10).events)
        wait_until_consumed(settings, [worker])
        yield worker
    finally:
        worker.stop(signal.SIGTERM)


def exported(worker: WorkerProcess) -> tuple[dict[str, set[str]], set[str]]:
    """The worker's ``/metrics`` now: series name -> label names of its samples, and every
    series name declared (a labelled series may be declared with no sample yet)."""
    url = f"http://127.0.0.1:{worker.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    sampled: dict[str, set[str]] = {}
    declared: set[str] = set()
    for family in text_string_to_metric_families(text):
        declared.update(f"{family.name}{suffix}" for suffix in _SUFFIXES.get(family.type, ("",)))
        for sample in family.samples:
            sampled.setdefault(sample.name, set()).update(sample.labels)
    return sampled, declared | set(sampled)


_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "info": ("_info",),
    "summary": ("", "_count", "_sum"),
    "untyped": ("",),
}
"""The sample names of a metric family, by its type (as prometheus_client's parser names it)."""


DELIVERY_PREFIX = "segstream_delivery_"
"""Series of ``segstream deliver``'s own registry, not a worker's: their rules and panels are
held to that registry by tests/unit/deploy/test_delivery_series.py."""


def all_queries() -> list[Query]:
    """Every rule and panel expression that reads a worker's series."""
    rules = recording_rules()
    queries = [*rules.values(), *alert_queries(), *dashboard_queries()]
    return [
        q
        for q in (resolved(q, rules) for q in queries)
        if not any(name.startswith(DELIVERY_PREFIX) for name in q.series)
    ]


def test_every_series_and_label_the_rules_and_dashboard_query_is_exported(
    worker: WorkerProcess,
) -> None:
    queries = all_queries()
    wanted = {name for q in queries for name in q.series} - set(PROMETHEUS_OWN) - set(PENDING)
    needs_sample = wanted - set(UNSAMPLED)
    # Some gauges are set by background readers (lag every 2 s, drift after a batch).
    seen: list[tuple[dict[str, set[str]], set[str]]] = []

    def all_exported() -> bool:
        seen.append(exported(worker))
        sampled, declared = seen[-1]
        return needs_sample <= set(sampled) and wanted <= declared

    def missing() -> str:
        sampled, declared = seen[-1]
        gone = (needs_sample - set(sampled)) | (wanted - declared)
        return f"never exported: {sorted(gone)}\n{worker.log_tail()}"

    wait_until(all_exported, 60, missing, interval_s=0.5)
    sampled, declared = seen[-1]
    known = {name: labels | TARGET_LABELS for name, labels in sampled.items()} | PROMETHEUS_OWN
    for name, labels in UNSAMPLED.items():
        assert name not in sampled, f"{name} has samples now: drop it from UNSAMPLED"
        known[name] = labels | TARGET_LABELS
    for pending, why in PENDING.items():
        assert pending not in declared, f"{pending} is exported now ({why}): drop it from PENDING"
    problems = []
    for query in queries:
        unknown = sorted(query.series - set(known))
        available = set().union(*(known.get(name, set()) for name in query.series)) | query.made
        missing = sorted(query.labels - available)
        if unknown or missing:
            problems.append(f"{query.where}: series {unknown}, labels {missing}: {query.expr}")
    assert not problems, "\n".join(problems)
    # The check is not vacuous: the queries cover the whole product surface they promise.
    assert {"segstream_consumer_lag_seconds", "segstream_drift_distance"} <= wanted
    assert len(queries) >= 30


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())["data"]


def _alerts(prometheus: PrometheusServer, name: str) -> list[dict[str, Any]]:
    """The alerts called ``name`` Prometheus holds now (pending or firing)."""
    return [
        a for a in _get(f"{prometheus.url}/api/v1/alerts")["alerts"]
        if a["labels"]["alertname"] == name
    ]  # fmt: skip


def _poll(check: Any, timeout_s: float, what: str) -> float:
    """Poll ``check`` until true; the seconds it took. Fails naming ``what``."""
    start = time.monotonic()
    wait_until(check, timeout_s, f"waiting for {what}", interval_s=0.5)
    return time.monotonic() - start


@pytest.fixture
def prometheus(worker: WorkerProcess, tmp_path: Path) -> Iterator[PrometheusServer]:
    """Prometheus scraping the worker every 2 s, with every rule's ``for:`` at 4 s."""
    rules = write_rules(with_for(load_rules(), "4s"), tmp_path / "alerts.yml")
    settings, ports = private_settings(tmp_path / "stack", prometheus_port=free_port())
    server = PrometheusServer(
        settings, ports, rules=rules, targets=[f"127.0.0.1:{worker.http_port}"], interval_s=2.0
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        assert not server.process.is_running()


def test_redis_stopped_fires_the_not_ready_alert_and_it_resolves_when_redis_is_back(
    worker: WorkerProcess, own_redis: RedisServer, prometheus: PrometheusServer
) -> None:
    def ready(value: str) -> bool:
        result = _get(f'{prometheus.url}/api/v1/query?query=segstream_ready{{check="redis"}}')
        return [r["value"][1] for r in result["result"]] == [value]

    def redis_alert(state: str | None) -> bool:
        found = [a for a in _alerts(prometheus, "SegstreamWorkerNotReady")
                 if a["labels"]["check"] == "redis"]  # fmt: skip
        return [a["state"] for a in found] == ([state] if state else [])

    _poll(lambda: ready("1"), 60, "Prometheus to scrape a ready worker")
    assert redis_alert(None)
    own_redis.stop()
    try:
        fired = _poll(lambda: redis_alert("firing"), 60, "SegstreamWorkerNotReady to fire")
        (alert,) = [a for a in _alerts(prometheus, "SegstreamWorkerNotReady")
                    if a["labels"]["check"] == "redis"]  # fmt: skip
        assert alert["labels"]["severity"] == "critical"
        assert alert["labels"]["instance"] == f"127.0.0.1:{worker.http_port}"
        assert alert["annotations"]["summary"] == (
            f"segstream worker 127.0.0.1:{worker.http_port} is not ready: its redis check fails"
        )
        assert alert["annotations"]["runbook_url"].endswith("#segstreamworkernotready")
    finally:
        start_again(own_redis)
    resolved_in = _poll(lambda: redis_alert(None), 60, "SegstreamWorkerNotReady to resolve")
    assert ready("1")
    assert worker.process.poll() is None, worker.log_tail()
    print(f"\nalert firing {fired:.1f} s after Redis stopped, resolved {resolved_in:.1f} s "
          "after it was back")  # fmt: skip
