"""How well the model fits, for the report: what PCA keeps, what it is made of, the choice of k.

Pure functions of the :class:`~segstream.training.artifact.Model` (everything is in the
artifact: ``pca_components`` are the loadings, ``explained_variance_ratio`` the variance kept,
``silhouette`` the per-k silhouettes on a seeded sample) and HTML rendering:

- :func:`loadings`: each encoded feature's weight in components 1 and 2 and its share of the
  component (the squared weight; a component's squared weights add up to 1);
- :func:`variance_note`: a warning when the two components keep less than
  :data:`VARIANCE_WARNING` of the encoded features' variance;
- :func:`compare_silhouettes`: the chosen k's silhouette against the best k's, *clearly lower*
  meaning by :data:`SILHOUETTE_MARGIN` or more;
- :func:`biplot_png` (users and loading arrows) and :func:`fit_html`, the report's section.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segstream.training.artifact import Model
from segstream.training.features import CATEGORICAL_COLUMNS
from segstream.training.plots import figure, img_tag, png, sample_rows, segment_colour

__all__ = [
    "BIPLOT_POINTS",
    "SILHOUETTE_MARGIN",
    "VARIANCE_WARNING",
    "Loading",
    "SilhouetteComparison",
    "biplot_png",
    "compare_silhouettes",
    "fit_html",
    "fit_notes",
    "loadings",
    "variance_note",
]

VARIANCE_WARNING = 0.5
"""Below this share of the variance kept by the two components, the report warns."""
SILHOUETTE_MARGIN = 0.05
"""A silhouette this much below another k's is *clearly* lower (sampling moves it ~0.01)."""
BIPLOT_POINTS = 5_000
"""Most users drawn under the biplot's arrows (a seeded sample)."""
_SHORT_ARROW = 0.3
"""Biplot arrows shorter than this share of the longest are named in a corner, not at the tip."""


@dataclass(frozen=True)
class Loading:
    """One encoded feature's weight in each component (``pca_components[:, j]``)."""

    feature: str
    weights: tuple[float, float]

    @property
    def shares(self) -> tuple[float, float]:
        """The squared weights: the feature's share of each component (0..1)."""
        return (self.weights[0] ** 2, self.weights[1] ** 2)


def _strongest(table: tuple[Loading, ...], component: int) -> str:
    """The feature with the largest absolute loading on ``component`` (0 or 1)."""
    return max(table, key=lambda row: abs(row.weights[component])).feature


def loadings(model: Model) -> tuple[Loading, ...]:
    """Every feature's loadings, in the model's column order."""
    return tuple(
        Loading(column, (float(model.pca_components[0, j]), float(model.pca_components[1, j])))
        for j, column in enumerate(model.feature_columns)
    )


def variance_note(model: Model, threshold: float = VARIANCE_WARNING) -> str | None:
    """A warning sentence when the components keep less than ``threshold``; else ``None``."""
    kept = float(sum(model.explained_variance_ratio))
    if kept >= threshold:
        return None
    return (
        f"two components keep only {kept:.0%} of the variance of the "
        f"{len(model.feature_columns)} encoded features; the segments are found and drawn in "
        f"this lossy map: users who differ in the other {1 - kept:.0%} can share a segment "
        "and sit side by side in the plots"
    )


@dataclass(frozen=True)
class SilhouetteComparison:
    """The chosen k's silhouette beside the best one of the elbow's k values.

    ``sample``: users the silhouettes were computed on (``None``: not recorded); ``how``: how
    the chosen k was chosen, e.g. ``"chosen at the SSE elbow"`` or ``"fixed with --k"``.
    """

    chosen_k: int
    chosen: float
    best_k: int
    best: float
    sample: int | None
    users: int
    margin: float
    how: str

    @property
    def clearly_lower(self) -> bool:
        """The chosen k's silhouette is at least ``margin`` below the best k's."""
        return self.best - self.chosen >= self.margin

    def sentence(self) -> str:
        """What the comparison says, naming the sample the silhouettes were computed on."""
        sample = (
            f"a seeded sample of {self.sample:,} of the {self.users:,} users"
            if self.sample is not None and self.sample < self.users
            else f"all {self.users:,} users"
            if self.sample is not None
            else "a sample of the users"
        )
        if self.best_k == self.chosen_k:
            verdict = f"k={self.chosen_k} also has the highest silhouette ({self.chosen:.3f})"
        elif self.clearly_lower:
            verdict = (
                f"k={self.chosen_k} ({self.how}) has a clearly lower silhouette "
                f"({self.chosen:.3f}) than k={self.best_k} ({self.best:.3f}): the segments of "
                f"k={self.best_k} are better separated; consider --k {self.best_k}"
            )
        else:
            verdict = (
                f"k={self.chosen_k} ({self.how}) has a silhouette of "
                f"{self.chosen:.3f}, within {self.margin:.2f} of the best, k={self.best_k} "
                f"({self.best:.3f})"
            )
        return f"{verdict}. Silhouettes computed on {sample}."


def compare_silhouettes(
    model: Model, margin: float = SILHOUETTE_MARGIN
) -> SilhouetteComparison | None:
    """The comparison, or ``None`` when the chosen k's silhouette is unknown (not in the curve,
    or undefined: NaN)."""
    curve = {
        k: s for k, s in zip(model.k_values, model.silhouette, strict=True) if not math.isnan(s)
    }
    if model.k not in curve:
        return None
    best_k = max(curve, key=lambda k: (curve[k], -k))  # equal silhouettes: the smaller k
    sample = model.extra.get("silhouette_sample")
    return SilhouetteComparison(
        chosen_k=model.k,
        chosen=curve[model.k],
        best_k=best_k,
        best=curve[best_k],
        sample=sample if isinstance(sample, int) and not isinstance(sample, bool) else None,
        users=model.n_rows,
        margin=margin,
        how="fixed with --k"
        if model.k_selection.startswith("fixed")
        else "chosen at the SSE elbow",
    )


def fit_notes(model: Model) -> list[str]:
    """The warnings the report shows at its top: too little variance kept, a poor k."""
    notes = [note] if (note := variance_note(model)) else []
    comparison = compare_silhouettes(model)
    if comparison is not None and comparison.clearly_lower:
        notes.append(comparison.sentence())
    return notes


def _short(feature: str) -> str:
    return feature.replace("most_frequent_", "").replace("total_", "")


def biplot_png(model: Model, components: np.ndarray, segments: np.ndarray, seed: int = 0) -> bytes:
    """Users in the two components (faint, by segment) under one arrow per encoded feature.

    An arrow is the feature's two loadings, all multiplied by one factor (in the title) so
    the longest reaches 85% of the 99th percentile of the users' distance from the origin.
    Arrows shorter than :data:`_SHORT_ARROW` of the longest are drawn grey and named in one
    line in a corner instead of at their tips, where their labels would overlap.
    """
    rows = sample_rows(components.shape[0], BIPLOT_POINTS, seed)
    fig, ax = figure(7, 5.5)
    ax.scatter(
        components[rows, 0],
        components[rows, 1],
        s=3,
        alpha=0.25,
        c=[segment_colour(int(s)) for s in segments[rows]],
        rasterized=True,
    )
    arrows = model.pca_components.T  # (features, 2)
    lengths = np.linalg.norm(arrows, axis=1)
    longest = float(lengths.max()) or 1.0
    reach = float(np.percentile(np.linalg.norm(components[rows], axis=1), 99)) if rows.size else 1.0
    scale = 0.85 * (reach or 1.0) / longest
    short = []
    for feature, (x, y), length in zip(model.feature_columns, arrows, lengths, strict=True):
        minor = length < _SHORT_ARROW * longest
        ax.annotate(
            "",
            xy=(x * scale, y * scale),
            xytext=(0, 0),
            arrowprops={"arrowstyle": "->", "color": "#888" if minor else "#222", "lw": 1.4},
        )
        if minor:
            short.append(_short(feature))
            continue
        ax.annotate(
            _short(feature),
            (x * scale * 1.08, y * scale * 1.08),
            ha="center",
            va="center",
            fontsize=9,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.8, "lw": 0},
        )
    if short:
        ax.text(
            0.01,
            0.01,
            "short grey arrows: " + ", ".join(short),
            transform=ax.transAxes,
            fontsize=8,
            color="#555",
            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8, "lw": 0},
        )
    ax.axhline(0, color="#999", linewidth=0.6)
    ax.axvline(0, color="#999", linewidth=0.6)
    kept = model.explained_variance_ratio
    ax.set_xlabel(f"component 1 ({kept[0]:.1%} of the variance)")
    ax.set_ylabel(f"component 2 ({kept[1]:.1%} of the variance)")
    ax.set_title(f"Biplot: users and the encoded features' loadings (arrows x{scale:.2f})")
    ax.grid(alpha=0.3)
    return png(fig)


def _loading_cells(loading: Loading, strongest: Sequence[str]) -> str:
    cells = []
    for c in (0, 1):
        bold = loading.feature == strongest[c]
        text = f"{loading.weights[c]:+.3f}"
        cells.append(f"<td class=num>{'<b>' if bold else ''}{text}{'</b>' if bold else ''}</td>")
        cells.append(f"<td class=num>{loading.shares[c]:.1%}</td>")
    return "".join(cells)


def fit_html(model: Model, components: np.ndarray, segments: np.ndarray) -> str:
    """The report's section on the PCA: variance kept, loadings table, biplot."""
    e = html.escape
    kept = model.explained_variance_ratio
    variance_rows = "".join(
        f"<tr><td>component {i + 1}</td><td class=num>{v:.1%}</td></tr>" for i, v in enumerate(kept)
    )
    variance_rows += f"<tr><th>total</th><th class=num>{sum(kept):.1%}</th></tr>"
    note = variance_note(model)
    warning = f'<p class="note">{e(note)}</p>' if note else ""
    table = loadings(model)
    strongest = [_strongest(table, c) for c in (0, 1)]
    loading_rows = "".join(
        f"<tr><td>{e(row.feature)}</td>{_loading_cells(row, strongest)}</tr>" for row in table
    )
    categorical = ", ".join(c for c in model.feature_columns if c in CATEGORICAL_COLUMNS)
    biplot = img_tag(biplot_png(model, components, segments, model.seed), "biplot")
    return f"""<h2>What the two components keep</h2>
<table><tr><th></th><th>share of the variance</th></tr>{variance_rows}</table>
{warning}
<h3>Loadings: the encoded features that make up each component</h3>
<p>Weight of each standardised feature in the component (the largest in bold) and its share of
the component (the squared weight). {e(categorical)} enter as label codes, their value's rank in
the sorted vocabulary: a weight on them follows the alphabetical order of the values, not a
measured quantity.</p>
<table><tr><th>feature</th><th>component 1</th><th>share</th><th>component 2</th><th>share</th>
</tr>{loading_rows}</table>
<div class="plots">{biplot}</div>
"""
