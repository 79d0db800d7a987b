"""The serving and operations side of a real ``segstream worker`` subprocess.

One worker, started on topics it creates itself, processes every event of 2,000 users with
orders and 40 without, plus a few bad records of known reasons; the module's tests then read
what it published (``user-segments``, ``segment-changes``, dead letters), stored (Redis) and
serves (``/metrics``, ``/status.json``, ``/``, ``/readyz``), against what the test sent and what
``segstream assign`` says of the same users. The lag test stops and restarts workers of its own.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from segstream.settings import Settings
from segstream.stream.domain.events import REASONS
from segstream.stream.http.metrics import Metrics
from segstream.stream.kafka.topics import read_all
from segstream.stream.lifecycle.replay import ReplayEvent
from segstream.stream.state.keys import state_key, state_prefix
from tests.integration.stream.conftest import (
    Dataset,
    WorkerProcess,
    cli_json,
    wait_until_consumed,
)
from tests.integration.stream.ops.conftest import ops_settings, user_slice
from tests.integration.stream.ops.support import (
    Http,
    Samples,
    ServedApp,
    named,
    publish,
    scrape,
    wait_for,
)
from tests.integration.stream.parity import batch_assign
from tests.integration.stream.schema_check import schema_check
from tests.ports import free_port

N_ASSIGNABLE = 2_000
N_PROFILE_ONLY = 40
POPULATION_MAX_AGE_S = 5.0
"""How old the worker's population figures may be (create_web_app's population_min_age_s)."""

_BAD_USER = 900_001  # no user of the dataset has this id


def _profile(**changes: Any) -> bytes:
    doc = {"user_id": _BAD_USER, "age": 30, "gender": "F", "country": "Japan",
           "traffic_source": "Search", "created_at": "2024-03-01T10:00:00Z"}  # fmt: skip
    doc.update(changes)
    return json.dumps(doc).encode()


def _order(**changes: Any) -> bytes:
    item = {"product_id": 10, "brand": "A", "category": "B", "sale_price": 25.0}
    doc = {"order_id": 9, "user_id": _BAD_USER, "status": "Processing",
           "created_at": "2024-03-01T10:00:00Z", "items": [item]}  # fmt: skip
    doc.update(changes)
    return json.dumps(doc).encode()


BAD: list[tuple[str, bytes, bytes, str]] = [  # input kind, key, value, reason
    ("users", b"900001", b"{not json", "not_json"),
    ("users", b"900001", b'"a string"', "not_object"),
    ("users", b"900001", _profile(age="31"), "wrong_type"),
    ("users", b"900001", _profile(age=-4), "out_of_range"),
    ("users", b"900002", _profile(), "key_mismatch"),
    ("orders", b"900001", b"[]", "not_object"),
    ("orders", b"900001", _order(status="Lost"), "unknown_status"),
    ("orders", b"900001", _order(items=[]), "empty_items"),
]


async def _publish_bad(settings: Settings) -> None:
    topics = {"users": settings.topic_users, "orders": settings.topic_orders}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for kind, key, value, _ in BAD:
            await producer.send_and_wait(topics[kind], value, key=key)
    finally:
        await producer.stop()


def _produced(settings: Settings, events: list[ReplayEvent]) -> dict[str, int]:
    """Input topic -> records sent to it: ``events`` and :data:`BAD`."""
    topics = {"users": settings.topic_users, "orders": settings.topic_orders}
    kinds = Counter(e.kind for e in events) + Counter(kind for kind, *_ in BAD)
    return {topics[kind]: n for kind, n in kinds.items()}


def _answers(worker: WorkerProcess, server: Http, path: str) -> int | None:
    """The status of ``GET path``, ``None`` while nothing listens; fails if the worker died."""
    code = worker.process.poll()
    assert code is None, f"worker exited with {code}:\n{worker.log_tail()}"
    try:
        return server.request("GET", path)[0]
    except (urllib.error.URLError, ConnectionError):
        return None


def _lag_gauges(samples: Samples) -> dict[tuple[str, str], tuple[float, float | None]]:
    """(topic, partition) -> (messages, seconds) of the lag gauges (seconds absent: None)."""
    messages = named(samples, "segstream_consumer_lag_messages")
    seconds = named(samples, "segstream_consumer_lag_seconds")
    return {
        (dict(labels)["topic"], dict(labels)["partition"]): (value, seconds.get(labels))
        for labels, value in messages.items()
    }


def _partitions(settings: Settings) -> set[tuple[str, str]]:
    return {
        (topic, str(p))
        for topic in (settings.topic_users, settings.topic_orders)
        for p in range(settings.topic_partitions)
    }


def _caught_up(server: Http, settings: Settings) -> bool:
    """Every input partition has lag gauges, all at 0 messages and 0 seconds."""
    try:
        gauges = _lag_gauges(scrape(server))
    except (urllib.error.URLError, ConnectionError):
        return False
    return set(gauges) == _partitions(settings) and set(gauges.values()) == {(0.0, 0.0)}


@dataclass(frozen=True)
class WorkerRun:
    """The module's worker after it processed everything the fixture sent."""

    settings: Settings
    http: Http
    """The worker's HTTP side."""
    produced: dict[str, int]
    """Input topic -> records sent to it."""
    segments: dict[int, int]
    """The slice's SQL users -> their segment by ``segstream assign``."""
    profile_only: list[int]
    first_scrape: Samples
    """``/metrics`` once the worker was ready, before anything was produced."""
    first_scrape_at: float
    """``time.monotonic()`` when that scrape returned."""


@pytest.fixture(scope="module")
def run(
    kafka_bootstrap: str,
    redis_url: str,
    dataset: Dataset,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerRun]:
    workdir = tmp_path_factory.mktemp("ops-worker")
    settings = ops_settings(
        kafka_bootstrap,
        redis_url,
        dataset.models_dir,
        create_topics=False,  # the worker must make them, user-segments compacted
        data_dir=workdir / "worker-data",
        log_level="info",
    )
    chosen = user_slice(dataset, N_ASSIGNABLE, N_PROFILE_ONLY)
    assigned = batch_assign(dataset, workdir / "assigned.parquet").set_index("user_id")
    segments = {u: int(assigned.at[u, "segment"]) for u in chosen.assignable}
    worker = WorkerProcess(settings, workdir / "worker.log")
    try:
        http = Http(f"http://{settings.http_host}:{worker.http_port}")
        wait_for(lambda: _answers(worker, http, "/readyz") == 200, "the worker ready", 60)
        first = scrape(http)
        first_at = time.monotonic()
        half = len(chosen.events) // 2
        publish(settings, chosen.events[:half])
        asyncio.run(_publish_bad(settings))
        publish(settings, chosen.events[half:])
        wait_until_consumed(settings, [worker], timeout_s=90)
        yield WorkerRun(
            settings=settings,
            http=http,
            produced=_produced(settings, chosen.events),
            segments=segments,
            profile_only=chosen.profile_only,
            first_scrape=first,
            first_scrape_at=first_at,
        )
    finally:
        worker.stop(signal.SIGTERM)


async def _bootstrap(bootstrap: str, topic: str) -> dict[int, dict[str, Any]]:
    """What a new downstream consumer learns from ``topic``: the last value of each key.

    A plain consumer of no group, subscribed and reading from the earliest offset, up to the
    end offsets of the moment it was given its partitions.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    current: dict[int, dict[str, Any]] = {}
    ends: dict[Any, int] = {}
    try:
        async with asyncio.timeout(30):
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        current[int(record.key)] = json.loads(record.value)
                partitions = list(consumer.assignment())
                if not partitions:
                    continue  # not given its partitions yet
                ends = ends or await consumer.end_offsets(partitions)
                if all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
                    return current
    finally:
        await consumer.stop()


async def _topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
    finally:
        await admin.close()
    ((error_code, _, _, name, entries),) = response.resources
    assert (error_code, name) == (0, topic)
    return {entry[0]: entry[1] for entry in entries}


def _stored(settings: Settings, users: list[int]) -> dict[int, tuple[str | None, ...]]:
    """user -> the (seg, mv, ua) fields of the worker's Redis hash."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        pipe = client.pipeline(transaction=False)
        for uid in users:
            pipe.hmget(state_key(state_prefix(settings), uid), "seg", "mv", "ua")
        return {uid: tuple(row) for uid, row in zip(users, pipe.execute(), strict=True)}
    finally:
        client.close()


def test_a_new_consumer_of_user_segments_gets_every_users_current_segment(
    run: WorkerRun, dataset: Dataset
) -> None:
    settings, version = run.settings, dataset.model.version
    bootstrap = settings.kafka_bootstrap_servers
    current = asyncio.run(_bootstrap(bootstrap, settings.topic_user_segments))

    assert {u: doc["segment"] for u, doc in current.items()} == run.segments
    check_document = schema_check("user_segment")
    for uid, doc in current.items():
        check_document(doc)
        assert doc["user_id"] == uid and doc["model_version"] == version
    stored = _stored(settings, [*run.segments, *run.profile_only])
    assert {u: (str(run.segments[u]), version, current[u]["updated_at"]) for u in run.segments} == {
        u: stored[u] for u in run.segments
    }
    assert {stored[u][0] for u in run.profile_only} == {None}

    # Following segment-changes from there on is consistent: each user's last change there is
    # the bootstrapped value (a user's records all sit in one partition, in order).
    last_change: dict[int, dict[str, Any]] = {}
    for record in asyncio.run(read_all(settings, settings.topic_segment_changes)):
        last_change[int(record.key)] = json.loads(record.value)
    assert {
        u: (c["segment"], c["model_version"], c["occurred_at"]) for u, c in last_change.items()
    } == {u: (d["segment"], d["model_version"], d["updated_at"]) for u, d in current.items()}

    config = asyncio.run(_topic_config(bootstrap, settings.topic_user_segments))
    assert config["cleanup.policy"] == "compact"
    changes_config = asyncio.run(_topic_config(bootstrap, settings.topic_segment_changes))
    assert changes_config["cleanup.policy"] == "delete"  # the full history stays


def test_worker_metrics_count_what_was_sent_and_published(run: WorkerRun, dataset: Dataset) -> None:
    settings, version = run.settings, dataset.model.version
    first = run.first_scrape
    assert named(first, "segstream_events_consumed_total") == {}
    assert named(first, "segstream_dead_letters_total") == {(("reason", r),): 0.0 for r in REASONS}
    assert named(first, "segstream_segment_changes_total") == {(): 0.0}
    assert named(first, "segstream_model_info") == {(("version", version),): 1.0}

    # The figures may be POPULATION_MAX_AGE_S old: past that, a scrape must show the current
    # ones, even though the previous scrape counted before anything was produced.
    time.sleep(max(0.0, run.first_scrape_at + POPULATION_MAX_AGE_S + 0.5 - time.monotonic()))
    samples = scrape(run.http)

    def one(name: str) -> float:
        return named(samples, name)[()]

    consumed = named(samples, "segstream_events_consumed_total")
    assert consumed == {(("topic", t),): float(n) for t, n in run.produced.items()}
    total = sum(run.produced.values())
    assert one("segstream_batch_events_sum") == total
    assert one("segstream_batch_events_count") == one("segstream_batch_processing_seconds_count")
    assert 1 <= one("segstream_batch_events_count") <= total

    reasons = Counter(reason for *_, reason in BAD)
    assert named(samples, "segstream_dead_letters_total") == {
        (("reason", r),): float(reasons[r]) for r in REASONS
    }
    assert len(asyncio.run(read_all(settings, settings.topic_dead_letters))) == len(BAD)

    # The metric counts every change published, re-sends included: so do the topic's records.
    # A clean run re-sends nothing, so each record is a distinct change too.
    changes = asyncio.run(read_all(settings, settings.topic_segment_changes))
    assert one("segstream_segment_changes_total") == len(changes)
    assert len({json.loads(r.value)["event_id"] for r in changes}) == len(changes)
    assert len(changes) >= len(run.segments)

    assert named(samples, "segstream_segment_population") == {
        (("model_version", version), ("segment", str(s))): float(n)
        for s, n in Counter(run.segments.values()).items()
    }
    assert named(samples, "segstream_model_info") == {(("version", version),): 1.0}
    assert one("segstream_redis_errors_total") == one("segstream_redis_retries_total") == 0

    wait_for(lambda: _caught_up(run.http, settings), "the lag gauges of every partition at 0")


def test_worker_serves_its_status_page_and_document(run: WorkerRun, dataset: Dataset) -> None:
    model = dataset.model
    status, headers, body = run.http.request("GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"<title>segstream status</title>" in body
    status, _, _ = run.http.request("GET", "/static/status.js")
    assert status == 200

    counts = Counter(run.segments.values())
    expected = [{"segment": s, "users": counts[s]} for s in range(model.k)]

    def document() -> dict[str, Any]:
        status, doc = run.http.json("GET", "/status.json")
        assert status == 200
        return doc

    # The page never waits for a recount: it shows the last figures and recounts behind.
    wait_for(lambda: document()["populations"]["segments"] == expected, "current populations")
    doc = document()
    assert doc["model"] == {"version": model.version, "k": model.k, "error": None}
    assert doc["health"]["ready"] is True
    wait_for(lambda: document()["lag"]["members"] == 1, "the worker counted in its group")
    populations = doc["populations"]
    assert populations["model_version"] == model.version
    assert (populations["unassigned"], populations["other_versions"]) == (N_PROFILE_ONLY, 0)
    assert sum(s["users"] for s in populations["segments"]) == N_ASSIGNABLE
    assert doc["throughput"]["this_process"]["events_total"] == sum(run.produced.values())
    latest = doc["changes"]["latest"]
    assert 0 < len(latest) <= 20
    assert {c["user_id"] for c in latest} <= set(run.segments)
    assert {c["model_version"] for c in latest} == {model.version}
    wait_for(lambda: document()["lag"]["total"] == 0, "the status page's lag at 0")
    assert document()["lag"]["group"] == run.settings.app_id
    # No SEGSTREAM_DELIVERY_CONFIG: no Delivery section at all (not an empty one).
    assert run.settings.delivery_config is None and "delivery" not in document()


def test_running_worker_is_ready(run: WorkerRun, dataset: Dataset) -> None:
    status, doc = run.http.json("GET", "/readyz")
    assert status == 200, doc
    assert (doc["ready"], doc["reasons"]) == (True, [])
    assert {name: check["ok"] for name, check in doc["checks"].items()} == {
        "kafka": True,
        "redis": True,
        "model": True,
        "progress": True,  # the worker's watchdog sees no stall
        "redis_replicas": True,  # no primary is written short of replicas
    }
    assert dataset.model.version in doc["checks"]["model"]["detail"]
    assert run.http.json("GET", "/healthz") == (200, {"status": "alive"})


FIRST = 300
PENDING = 137


def _lag_command(settings: Settings) -> dict[str, Any]:
    """``segstream lag --json`` run as an operator would, in its own process."""
    return cli_json(settings, "lag")


def test_events_produced_while_the_worker_is_down_are_exactly_n_pending_until_it_restarts(
    stream_settings: Settings, dataset: Dataset, start_worker
) -> None:
    settings = stream_settings
    events = dataset.plan.events
    first = start_worker(settings)
    publish(settings, events[:FIRST])
    wait_until_consumed(settings, [first], timeout_s=60)
    assert first.stop(signal.SIGTERM) == 0, first.log_tail()
    assert _lag_command(settings)["total_lag"] == 0

    pending = events[FIRST : FIRST + PENDING]
    produced_at = time.time()
    publish(settings, pending)
    # The metric, served while no worker runs (as `segstream api` would serve it).
    ops = ServedApp(
        settings.model_copy(update={"http_port": free_port()}),
        metrics=Metrics(),
        lag_interval_s=0.3,
    )
    try:
        document = _lag_command(settings)
        assert document["total_lag"] == PENDING
        assert 0 < document["max_seconds_behind"] <= time.time() - produced_at + 1
        for p in document["partitions"]:
            # A partition that got nothing of the first events was never committed.
            assert p["lag"] == p["end"] - max(p["committed"] or 0, p["start"])
            assert p["seconds_behind"] > 0 if p["lag"] else p["seconds_behind"] == 0
        wait_for(
            lambda: sum(m for m, _ in _lag_gauges(scrape(ops)).values()) == PENDING,
            f"the lag gauges at {PENDING}",
        )
        gauges = _lag_gauges(scrape(ops))
        assert set(gauges) == _partitions(settings)
        assert max(s or 0.0 for _, s in gauges.values()) > 0

        second = start_worker(settings)
        worker_http = Http(f"http://{settings.http_host}:{second.http_port}")
        wait_for(lambda: _answers(second, worker_http, "/healthz") == 200, "the second worker", 60)
        wait_for(lambda: _caught_up(worker_http, settings), "the worker's lag gauges at 0", 60)
        wait_for(lambda: _lag_command(settings)["total_lag"] == 0, "segstream lag at 0")
        assert _lag_command(settings)["max_seconds_behind"] == 0
        wait_for(lambda: _caught_up(ops, settings), "the served lag gauges at 0")

        # A clean stop committed everything: the new worker took exactly the pending records.
        topics = {"users": settings.topic_users, "orders": settings.topic_orders}
        by_topic = Counter(topics[e.kind] for e in pending)
        assert named(scrape(worker_http), "segstream_events_consumed_total") == {
            (("topic", t),): float(n) for t, n in by_topic.items()
        }
    finally:
        ops.stop()
