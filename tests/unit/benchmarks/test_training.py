"""The benchmark runs end to end on small sizes and prints every figure beside its target."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from benchmarks.training import print_figures, run_bench


@pytest.mark.slow
def test_bench_measures_and_prints_every_figure(tmp_path: Path) -> None:
    figures = run_bench(users=1_500, big_users=2_000, workdir=tmp_path, seed=3)
    assert figures.big_peak_rss_mb is not None and figures.big_peak_rss_mb > 50
    assert figures.big_sql_s is not None and figures.big_train_s is not None
    assert figures.assign_rows == 1_000_000 and figures.assign_rows_per_s > 0
    assert figures.align_users > 1_000 and figures.align_s > 0
    assert (tmp_path / "models-big" / "current" / "model.json").is_file()
    console = Console(record=True, width=140)
    print_figures(figures, console)
    text = console.export_text()
    measures = ("generate + train", "feature SQL + train", "peak RSS", "assignment", "alignment")
    for measure in measures:
        assert measure in text
