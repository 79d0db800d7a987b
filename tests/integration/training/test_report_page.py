"""The training report in headless Chromium: every plot loads, every section is there.

Debian's ``chromium`` is driven by Playwright with ``executable_path`` (no browser download),
as the status page's test does. The page is kept as ``test-artifacts/report-page.png`` for a
person to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from segstream.training.artifact import load_model
from segstream.training.data import DataSource, read_exclusions
from segstream.training.generate import generate_tables, write_tables
from segstream.training.pipeline import REPORT_FILE, train_to_directory
from segstream.training.train import TrainConfig

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent (scripts/install-system-deps.sh installs Debian's)",
)


def test_report_page_renders_every_plot_and_section(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    data = tmp_path / "data"
    write_tables(generate_tables(6_000, seed=11), data)
    source = DataSource(path=data)
    outcome = train_to_directory(source, tmp_path / "models", TrainConfig(seed=3))
    model = load_model(outcome.version_dir)
    exclusions = read_exclusions(source)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-page.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto((outcome.version_dir / REPORT_FILE).as_uri())
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])"
            )
            assert [alt for alt, _, _ in images] == [
                "elbow chart",
                "component scatter",
                "segment sizes",
                "biplot",
                "age histograms",
            ]
            assert all(done and width > 300 for _, done, width in images), images
            headings = page.locator("h2, h3").all_inner_texts()
            for heading in (
                "Who is segmented",
                "What the two components keep",
                "Loadings: the encoded features that make up each component",
                "Age per segment",
                "Elbow",
                "Lineage: segment ids across versions",
            ):
                assert heading in headings
            text = page.inner_text("body")
            assert f"{exclusions.users:,} users in the data: {model.n_rows:,} segmented" in text
            assert f"{sum(model.explained_variance_ratio):.1%}" in text
            loadings = page.locator("table:has(th:text-is('feature')) tr").count()
            assert loadings == 1 + len(model.feature_columns)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 100_000
