"""``GET /metrics`` parsed with prometheus_client's own parser: it says what happened."""

from __future__ import annotations

from segstream.stream.http.metrics import Metrics
from tests.integration.stream.ops.conftest import World
from tests.integration.stream.ops.support import ServedApp, named, scrape
from tests.waiting import wait_until


def test_recorded_worker_figures_are_scraped_back(served: ServedApp, metrics: Metrics) -> None:
    before = scrape(served)
    metrics.consumed("users", 11)
    metrics.consumed("orders", 29)
    metrics.observe_batch(0.012, 40)
    metrics.changes(6)
    metrics.dead_letter("not_json", 2)
    metrics.dead_letter("key_mismatch")
    for _ in range(3):
        metrics.redis_error()
        metrics.redis_retry()
    after = scrape(served)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert delta("segstream_events_consumed_total", topic="users") == 11
    assert delta("segstream_events_consumed_total", topic="orders") == 29
    assert delta("segstream_batch_processing_seconds_count") == 1
    assert delta("segstream_batch_processing_seconds_bucket", le="0.01") == 0
    assert delta("segstream_batch_processing_seconds_bucket", le="0.025") == 1
    assert delta("segstream_batch_events_sum") == 40
    assert delta("segstream_segment_changes_total") == 6
    assert delta("segstream_dead_letters_total", reason="not_json") == 2
    assert delta("segstream_dead_letters_total", reason="key_mismatch") == 1
    assert delta("segstream_dead_letters_total", reason="too_large") == 0
    assert delta("segstream_redis_errors_total") == 3
    assert delta("segstream_redis_retries_total") == 3


def test_model_info_and_populations_match_the_api(world: World, served: ServedApp) -> None:
    samples = scrape(served)
    version = world.dataset.model.version
    assert named(samples, "segstream_model_info") == {(("version", version),): 1.0}
    status, segments = served.json("GET", "/segments")
    assert status == 200
    population = named(samples, "segstream_segment_population")
    assert population == {
        (("model_version", version), ("segment", str(s["segment"]))): float(s["users"])
        for s in segments["segments"]
        if s["users"]
    }
    assert sum(population.values()) == len(world.assignable)


def test_lag_gauges_cover_every_input_partition_at_zero_once_processed(
    world: World, served: ServedApp
) -> None:
    wait_until(
        lambda: named(scrape(served), "segstream_consumer_lag_messages"),
        20,
        "the lag was never read",
    )
    samples = scrape(served)
    expected = {
        (("partition", str(p)), ("topic", t))
        for t in (world.settings.topic_users, world.settings.topic_orders)
        for p in range(4)
    }
    messages = named(samples, "segstream_consumer_lag_messages")
    seconds = named(samples, "segstream_consumer_lag_seconds")
    assert set(messages) == set(seconds) == expected
    assert set(messages.values()) == set(seconds.values()) == {0.0}
