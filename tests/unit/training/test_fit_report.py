"""The report's section on the fit: loadings, variance kept, silhouettes of the k values."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from segstream.training.artifact import Model
from segstream.training.features import FEATURE_COLUMNS
from segstream.training.fit_report import (
    biplot_png,
    compare_silhouettes,
    fit_html,
    fit_notes,
    loadings,
    variance_note,
)
from segstream.training.train import TrainResult


def _with(model: Model, **changes: object) -> Model:
    return dataclasses.replace(model, **changes)  # type: ignore[arg-type]


def test_loadings_are_the_pca_weights_of_each_feature_in_column_order(
    small_fit: TrainResult,
) -> None:
    model = small_fit.model
    table = loadings(model)
    assert [row.feature for row in table] == list(FEATURE_COLUMNS)
    for j, row in enumerate(table):
        assert row.weights == (model.pca_components[0, j], model.pca_components[1, j])
    # PCA's components are unit vectors: the shares of each component add up to 1.
    assert sum(row.shares[0] for row in table) == pytest.approx(1.0)
    assert sum(row.shares[1] for row in table) == pytest.approx(1.0)


def test_the_section_shows_every_weight_the_variance_and_a_biplot(small_fit: TrainResult) -> None:
    model = small_fit.model
    page = fit_html(model, small_fit.components, small_fit.segments)
    for row in loadings(model):
        assert f"<td>{row.feature}</td>" in page
        for c in (0, 1):
            assert f"{row.weights[c]:+.3f}" in page and f"{row.shares[c]:.1%}" in page
    strongest = max(loadings(model), key=lambda row: abs(row.weights[0]))
    assert f"<b>{strongest.weights[0]:+.3f}</b>" in page
    ratio = model.explained_variance_ratio
    assert f"<td class=num>{ratio[0]:.1%}</td>" in page
    assert f"<th class=num>{sum(ratio):.1%}</th>" in page
    assert 'alt="biplot"' in page


def test_little_variance_kept_is_said_plainly(small_fit: TrainResult) -> None:
    lossy = _with(small_fit.model, explained_variance_ratio=(0.209, 0.161))
    assert variance_note(lossy) == (
        "two components keep only 37% of the variance of the 7 encoded features; the segments "
        "are found and drawn in this lossy map: users who differ in the other 63% can share a "
        "segment and sit side by side in the plots"
    )
    assert variance_note(_with(lossy, explained_variance_ratio=(0.3, 0.2))) is None
    assert 'class="note"' in fit_html(lossy, np.zeros((3, 2)), np.zeros(3, dtype=int))
    assert fit_notes(lossy) == [variance_note(lossy)]


def _curve(model: Model, silhouettes: tuple[float, ...], k: int = 4, fixed: bool = False) -> Model:
    ks = tuple(range(2, 2 + len(silhouettes)))
    centers = np.arange(2 * k, dtype=np.float64).reshape(k, 2)
    return _with(
        model,
        centers=centers,
        k_values=ks,
        sse=tuple(float(100 - k) for k in ks),
        silhouette=silhouettes,
        k_selection=f"fixed k={k}" if fixed else f"auto k={k} (kneedle)",
        n_rows=15_965,
        extra={"silhouette_sample": 5_000},
        explained_variance_ratio=(0.4, 0.3),  # enough: no variance note beside these
    )


def test_a_clearly_lower_silhouette_at_the_chosen_k_is_flagged(small_fit: TrainResult) -> None:
    model = _curve(small_fit.model, (0.52, 0.41, 0.38, 0.36))  # k = 2, 3, 4, 5; chosen 4
    comparison = compare_silhouettes(model)
    assert comparison is not None and comparison.clearly_lower
    assert (comparison.chosen_k, comparison.best_k) == (4, 2)
    assert comparison.sentence() == (
        "k=4 (chosen at the SSE elbow) has a clearly lower silhouette (0.380) than k=2 "
        "(0.520): the segments of k=2 are better separated; consider --k 2. Silhouettes "
        "computed on a seeded sample of 5,000 of the 15,965 users."
    )
    assert comparison.sentence() in fit_notes(model)


def test_a_silhouette_within_the_margin_is_only_described(small_fit: TrainResult) -> None:
    model = _curve(small_fit.model, (0.40, 0.41, 0.38, 0.36), fixed=True)
    comparison = compare_silhouettes(model)
    assert comparison is not None and not comparison.clearly_lower
    assert comparison.sentence().startswith(
        "k=4 (fixed with --k) has a silhouette of 0.380, within 0.05 of the best, k=3 (0.410)"
    )
    assert fit_notes(model) == []
    best = compare_silhouettes(_curve(small_fit.model, (0.30, 0.31, 0.38, 0.36)))
    assert best is not None and best.sentence().startswith("k=4 also has the highest")


def test_an_unknown_silhouette_at_the_chosen_k_gives_no_comparison(small_fit: TrainResult) -> None:
    model = _curve(small_fit.model, (0.52, 0.41, math.nan, 0.36))
    assert compare_silhouettes(model) is None and fit_notes(model) == []


def test_biplot_is_a_png(small_fit: TrainResult) -> None:
    data = biplot_png(small_fit.model, small_fit.components, small_fit.segments)
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
