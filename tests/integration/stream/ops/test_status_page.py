"""The status page in headless Chromium: live populations, changes, lag, and self-refresh.

Debian's ``chromium`` is driven by Playwright with ``executable_path`` (no browser download).
The screenshot is kept as ``test-artifacts/status-page.png`` for a person to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from segstream.stream.http.metrics import Metrics
from tests.integration.stream.ops.conftest import World
from tests.integration.stream.ops.support import ServedApp, publish, stand_in_worker

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[4] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NEW_USERS = 30

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent (scripts/install-system-deps.sh installs Debian's)",
)


@pytest.fixture(scope="module")
def served(world: World) -> Iterator[ServedApp]:
    """The module's app, recounting populations often so the page's refresh can be watched."""
    app = ServedApp(world.settings, metrics=Metrics(), lag_interval_s=0.3, population_min_age_s=0.3)
    try:
        yield app
    finally:
        app.stop()


def shown_counts(page) -> list[int]:
    texts = page.locator("#populations .bar .count").all_inner_texts()
    return [int(t.replace(",", "")) for t in texts]


def shown_change_users(page) -> set[int]:
    return {int(t) for t in page.locator("#changes tbody tr td:nth-child(2)").all_inner_texts()}


def test_status_page_shows_live_figures_and_refreshes_itself(
    world: World, served: ServedApp
) -> None:
    from playwright.sync_api import sync_playwright

    model = world.dataset.model
    newcomers = sorted(
        int(u) for u in world.dataset.features["user_id"] if int(u) not in set(world.assignable)
    )[:NEW_USERS]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.goto(served.base + "/")
            page.wait_for_function("Number(document.body.dataset.refreshes || 0) >= 1")

            assert f"model: {model.version} (k={model.k})" == page.inner_text("#model")
            status, segments = served.json("GET", "/segments")
            assert status == 200
            assert shown_counts(page) == [s["users"] for s in segments["segments"]]
            assert sum(shown_counts(page)) == len(world.assignable)
            assert "20 users not assignable yet" in page.inner_text("#pop-note")
            shown = shown_change_users(page)
            assert shown and shown <= set(world.assignable)
            assert page.locator("#lag tbody tr").count() == 8
            assert page.inner_text("#lag-total") == "0"

            # New events while the page stays open: it must pick them up by itself.
            refreshes = int(page.get_attribute("body", "data-refreshes") or 0)
            events = [e for e in world.dataset.plan.events if e.user_id in set(newcomers)]
            # Playwright's sync API runs a loop in this thread: asyncio code goes elsewhere.
            with ThreadPoolExecutor(1) as pool:
                pool.submit(publish, world.settings, events).result()
                assert pool.submit(stand_in_worker, world.settings, len(events)).result() == len(
                    events
                )
            # Populations are recounted in the background at most every max(5 s, 20 x the last
            # count's duration); with every test's users in the session's one Redis a count
            # can take a second under load, hence the generous deadlines.
            page.wait_for_function(
                "ids => Array.from(document.querySelectorAll('#changes tbody td:nth-child(2)'))"
                ".some(td => ids.includes(Number(td.textContent)))",
                arg=newcomers,
                timeout=60_000,
            )
            page.wait_for_function(
                "total => Array.from(document.querySelectorAll('#populations .count'))"
                ".reduce((s, e) => s + Number(e.textContent.replace(/,/g, '')), 0) === total",
                arg=len(world.assignable) + NEW_USERS,
                timeout=60_000,
            )
            page.wait_for_function("document.getElementById('processed').textContent !== '–'")
            assert int(page.get_attribute("body", "data-refreshes") or 0) > refreshes
            assert shown_change_users(page) & set(newcomers)
            assert page.is_hidden("#offline")
            page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "status-page.png").stat().st_size > 10_000


def test_status_page_asks_for_the_token_and_then_shows_the_figures(world: World) -> None:
    """With SEGSTREAM_HTTP_TOKEN set the page loads, asks for the token, keeps it for the tab
    (sessionStorage) and sends it with its fetches; a wrong one is said to be refused."""
    from playwright.sync_api import sync_playwright
    from pydantic import SecretStr

    from tests.ports import free_port

    token = "status-page-token"
    settings = world.settings.model_copy(
        update={"http_token": SecretStr(token), "http_port": free_port()}
    )
    served = ServedApp(settings, metrics=Metrics(), lag_interval_s=0.3)
    model = world.dataset.model
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(served.base + "/")
                page.wait_for_selector("#token-form", state="visible")
                assert "needs its SEGSTREAM_HTTP_TOKEN" in page.inner_text("#token-hint")
                assert "a token is required" in page.inner_text("#offline")

                page.fill("#token", "not-the-token")
                page.click("#token-form button")
                page.wait_for_function(
                    "document.getElementById('token-hint').textContent.includes('refused')"
                )
                page.fill("#token", token)
                page.click("#token-form button")
                page.wait_for_function("Number(document.body.dataset.refreshes || 0) >= 1")
                assert page.inner_text("#model") == f"model: {model.version} (k={model.k})"
                assert page.is_hidden("#token-form")
                assert page.evaluate("sessionStorage.getItem('segstream.token')") == token
            finally:
                browser.close()
    finally:
        served.stop()
