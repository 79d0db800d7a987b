"""The status page when a dependency stops: a banner names it, figures turn unknown, not stale.

The module runs its own Kafka and Redis (the session's are shared by every test), stops Redis,
then Kafka, and watches the page in headless Chromium. Screenshots of both states are kept in
``test-artifacts/`` for a person to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from segstream.services.stack import Stack
from segstream.settings import Settings
from segstream.stream.http.metrics import Metrics
from tests.integration.stacks import private_settings, running
from tests.integration.stream.conftest import Dataset
from tests.integration.stream.ops.conftest import ops_settings
from tests.integration.stream.ops.support import ServedApp
from tests.integration.stream.ops.test_status_page import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent (scripts/install-system-deps.sh installs Debian's)",
)

BANNER_ITEM = "#health li[data-check='{}']"


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A Kafka and a Redis of this module's own, so they can be stopped."""
    private = private_settings(tmp_path_factory.mktemp("outage-stack"))
    with running(Stack(*private)) as stack:
        yield stack


@pytest.fixture(scope="module")
def settings(own_stack: Stack, dataset: Dataset) -> Settings:
    return ops_settings(own_stack.kafka.bootstrap, own_stack.redis.url, dataset.models_dir)


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[ServedApp]:
    app = ServedApp(settings, metrics=Metrics(), lag_interval_s=0.3, population_min_age_s=0.3)
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture(scope="module")
def page(served: ServedApp) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(served.base + "/")
            # Ready once the lag reader has connected: no banner, known figures.
            page.wait_for_function(
                "document.getElementById('health').hidden"
                " && Number(document.body.dataset.refreshes || 0) >= 1",
                timeout=30_000,
            )
            yield page
        finally:
            browser.close()


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_with_redis_stopped_a_banner_names_redis_and_readyz_is_not_ready(
    own_stack: Stack, served: ServedApp, page
) -> None:
    # Nobody consumes yet. A fresh broker may answer the first group description only after
    # the first lag read ("workers: –"), so the count is waited for, not read once.
    page.wait_for_function(
        "document.getElementById('lag-group').textContent.endsWith('0 workers')", timeout=30_000
    )
    own_stack.redis.stop()
    try:
        page.wait_for_selector(BANNER_ITEM.format("redis"), timeout=20_000)
        banner = page.inner_text("#health")
        assert "Redis: unreachable: ConnectionError" in banner
        assert "ConnectionError: ConnectionError" not in banner
        assert page.locator(BANNER_ITEM.format("kafka")).count() == 0
        status, ready = served.json("GET", "/readyz")
        assert status == 503 and any(r.startswith("redis:") for r in ready["reasons"])
        page.wait_for_function(
            "document.getElementById('pop-note').textContent.includes('Redis: ConnectionError')"
        )
        assert shot(page, "status-page-redis-down.png").stat().st_size > 10_000
    finally:
        own_stack.redis.start()
    page.wait_for_function("document.getElementById('health').hidden", timeout=20_000)


def test_with_kafka_stopped_the_banner_names_kafka_and_figures_are_unknown(
    own_stack: Stack, served: ServedApp, page
) -> None:
    page.wait_for_function("document.getElementById('lag-total').textContent === '0'")
    own_stack.kafka.stop()
    page.wait_for_selector(BANNER_ITEM.format("kafka"), timeout=30_000)
    page.wait_for_function(
        "['processed', 'produced', 'changes-rate', 'lag-total', 'lag-seconds']"
        ".every(id => document.getElementById(id).textContent === '–')",
        timeout=30_000,
    )
    assert f"Kafka: cannot reach Kafka at {own_stack.kafka.bootstrap}: " in page.inner_text(
        "#health"
    )
    # A read in flight when the broker went may time out first; the reconnect that follows
    # names the refused connection.
    expected = f"Kafka: cannot reach Kafka at {own_stack.kafka.bootstrap}: KafkaConnectionError"
    page.wait_for_function(
        "text => document.getElementById('health').innerText.includes(text)",
        arg=expected,
        timeout=30_000,
    )
    assert "KafkaConnectionError: KafkaConnectionError" not in page.inner_text("body")
    status, ready = served.json("GET", "/readyz")
    assert status == 503 and any(r.startswith("kafka:") for r in ready["reasons"])
    assert shot(page, "status-page-kafka-down.png").stat().st_size > 10_000
