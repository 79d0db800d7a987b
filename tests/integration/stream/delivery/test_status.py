"""The worker's status page shows webhook delivery: per destination its group's backlog on
``segment-changes`` and its deliver processes, read from the real Kafka, and the dead letters
waiting; in headless Chromium too when Debian's chromium is installed."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from segstream.settings import Settings
from tests.integration.stream.conftest import Dataset, WorkerProcess, replay, wait_until_consumed
from tests.integration.stream.delivery.conftest import (
    changes_by_key,
    deliver_settings,
    run_deliver,
    write_config,
)
from tests.integration.stream.delivery.receiver import Receiver
from tests.ports import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
FAST = {"batch_size": 500, "linger_ms": 20, "rate_per_s": 1000}


def status(worker: WorkerProcess) -> dict[str, Any] | None:
    """The worker's ``/status.json``; ``None`` while its HTTP side is not up yet."""
    url = f"http://127.0.0.1:{worker.http_port}/status.json"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            document: dict[str, Any] = json.loads(response.read())
    except urllib.error.URLError:
        return None
    return document


def poll(worker: WorkerProcess, condition, what: str, processes, timeout_s: float = 180.0):
    """The first ``/status.json`` whose delivery part (by destination) satisfies ``condition``."""
    seen: list[dict[str, Any] | None] = []

    def shows() -> bool:
        for process in processes:  # a dead process fails at once, with its log
            code = process.process.poll()
            assert code is None, f"{process.log_path.name} exited {code}:\n{process.log_tail()}"
        seen.append(status(worker))
        document = seen[-1]
        if document is None:
            return False
        by_name = {d["name"]: d for d in document["delivery"]["destinations"]}
        return bool(condition(by_name, document["delivery"]))

    def shown() -> str:
        return f"waiting for {what}: {None if seen[-1] is None else seen[-1]['delivery']}"

    wait_until(shows, timeout_s, shown, interval_s=0.5)
    document = seen[-1]
    assert document is not None
    return {d["name"]: d for d in document["delivery"]["destinations"]}, document["delivery"]


def test_the_status_page_shows_each_destinations_backlog_processes_and_dead_letters(
    stream_settings: Settings, dataset: Dataset, start_worker, start_deliver, tmp_path: Path
) -> None:
    part = type(dataset.plan)(dataset.plan.events[: len(dataset.plan.events) // 5], 0)
    with Receiver({"fast": "fast", "down": "down", "reject": "reject"}) as receiver:
        config = write_config(
            tmp_path / "delivery.toml",
            receiver,
            {
                "fast": FAST,
                "down": {**FAST, "max_attempts": 100, "backoff_max_s": 5.0},
                "reject": {**FAST, "max_attempts": 1},
            },
        )
        settings = deliver_settings(stream_settings, config, tmp_path).model_copy(
            update={"delivery_http_port": free_port()}
        )
        worker = start_worker(settings)

        # No deliver process yet: every destination's group is empty, and says so.
        empty, _ = poll(
            worker,
            lambda d, _: all(x["members"] == 0 for x in d.values()),
            "the groups read",
            [worker],
        )
        assert list(empty) == ["fast", "down", "reject"]
        for entry in empty.values():
            assert entry["state"] == "warning"
            assert f"no deliver process in group {entry['group']}" in entry["warnings"][0]

        deliver = start_deliver(settings)
        replay(settings, part)
        wait_until_consumed(settings, [worker])
        changes = changes_by_key(settings)
        assert changes

        def settled(d: dict[str, Any], delivery: dict[str, Any]) -> bool:
            return (
                d["fast"]["backlog"] == 0
                and d["fast"]["members"] == 1
                and d["down"]["state"] == "warning"
                and d["reject"]["backlog"] == 0
                and delivery["dead_letters"]["waiting"] == len(changes)
                and delivery["dead_letters"]["complete"]
            )

        shown, delivery = poll(worker, settled, "fast drained, down behind", [worker, deliver])
        fast, down = shown["fast"], shown["down"]
        assert (fast["state"], fast["warnings"]) == ("ok", [])
        # Nothing of "down" is acknowledged: its backlog holds every change (and any
        # transaction markers among them), the oldest older than the warning threshold.
        assert down["members"] == 1 and down["backlog"] >= len(changes) > 0
        assert down["seconds_behind"] >= 10
        assert "changes not delivered" in down["warnings"][0]
        assert sum(p["lag"] for p in down["partitions"]) == down["backlog"]
        assert receiver.events("down") == [] and set(receiver.statuses["down"]) == {503}
        assert {e["idempotency_key"] for e in receiver.events("fast")} == set(changes)
        # "reject" refused everything: each change is one letter, counted for it alone.
        assert delivery["dead_letters"]["by_destination"] == {"reject": len(changes)}
        assert shown["reject"]["dead_letters"] == len(changes)
        assert shown["reject"]["warnings"][0].startswith(f"{len(changes)} dead letters")
        assert fast["dead_letters"] == down["dead_letters"] == 0
        assert delivery["warnings"] == 2 and delivery["error"] is None
        assert delivery["config"] == str(config)
        # The deliver process's own gauge says the same while its batch to "down" is retried.
        backlog_gauge(settings, lambda g: g.get("fast") == 0 and g["down"] >= len(changes))

        if CHROMIUM.exists():
            check_page(worker)

        # The destination comes back: its backlog drains to 0 and the warning goes.
        receiver.bring_up("down")
        poll(
            worker,
            lambda d, _: d["down"]["backlog"] == 0 and d["down"]["state"] == "ok",
            "down drained once up",
            [worker, deliver],
        )
        # "reject" accepts now and its letters are redriven: none waits any more, for it or
        # in total (the redrive group committed past them).
        receiver.bring_up("reject")
        code, report, stderr = run_deliver(settings, "--redrive")
        assert code == 0 and report["delivered"] == len(changes), stderr
        poll(
            worker,
            lambda d, x: (
                d["reject"]["dead_letters"] == 0
                and d["reject"]["state"] == "ok"
                and x["dead_letters"]["waiting"] == 0
                and x["dead_letters"]["by_destination"] == {}
            ),
            "the redriven letters gone",
            [worker, deliver],
        )
        assert deliver.stop(signal.SIGTERM) == 0, deliver.log_tail()
        assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()


def backlog_gauge(
    settings: Settings, expected: Callable[[dict[str, float]], bool]
) -> dict[str, float]:
    """``segstream_delivery_backlog_messages`` by destination on the deliver process's
    ``/metrics``, once ``expected`` of it (it is read from Kafka every 5 s, apart from the
    batches, so it lags the status page by a round or two)."""
    url = f"http://127.0.0.1:{settings.delivery_http_port}/metrics"
    seen: list[dict[str, float]] = []

    def gauged() -> bool:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        seen.append({
            sample.labels["destination"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "segstream_delivery_backlog_messages"
        })  # fmt: skip
        return expected(seen[-1])

    wait_until(gauged, 60, lambda: f"the backlog gauges stay at {seen[-1]}", interval_s=0.5)
    return seen[-1]


def check_page(worker: WorkerProcess) -> None:
    """The page draws the section: a row per destination, the one that is down flagged."""
    from playwright.sync_api import sync_playwright

    from tests.integration.stream.ops.test_status_page import ARTIFACTS, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1200})
            page.goto(f"http://127.0.0.1:{worker.http_port}/")
            page.wait_for_function("Number(document.body.dataset.refreshes || 0) >= 1")
            assert page.is_visible("#delivery")
            rows = page.locator("#delivery-table tbody tr")
            assert rows.count() == 3
            down = page.locator('#delivery-table tr[data-destination="down"]')
            assert down.get_attribute("class") == "lagging"
            assert "changes not delivered" in down.inner_text()
            reject = page.locator('#delivery-table tr[data-destination="reject"]')
            assert reject.get_attribute("class") == "lagging"
            assert "dead letters not received" in reject.inner_text()
            fast = page.locator('#delivery-table tr[data-destination="fast"]')
            assert fast.get_attribute("class") in (None, "")
            assert "dead letters waiting" in page.inner_text("#delivery-note")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "status-page-delivery.png"), full_page=True)
        finally:
            browser.close()
