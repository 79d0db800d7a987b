"""The per-segment report: the notebook's profile table, as self-contained HTML and in a terminal.

:func:`profile_segments` is pure (frame + labels -> :class:`SegmentProfile` values): for each
segment its size, its share of all segmented users, the top 3 values of every feature column
with their share inside the segment (ties by value, code point order), the mean of each
numeric feature and its users per :data:`AGE_BIN_WIDTH`-year age bin. :func:`render_html` draws
the elbow (chosen k marked), a scatter of the two components coloured by segment (a seeded
sample of at most :data:`SCATTER_POINTS` points), the segment sizes and the age histograms
with matplotlib's Agg backend, embedding them as base64 PNGs, so the file needs nothing
beside it. It also says who was left out and why (the counts training stored in the model,
:class:`~segstream.training.features.Exclusions`), warns when the two components keep little
of the variance or the chosen k has a clearly lower silhouette than another, shows the PCA
loadings and a biplot (:mod:`segstream.training.fit_report`), and ends with the version's
lineage (segment mapping to the previous version, users moved;
:mod:`segstream.training.lineage_report`). :func:`summary_table` is the same summary as a
rich table.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from segstream.training.artifact import Model
from segstream.training.features import (
    EXCLUSION_REASONS,
    FEATURE_COLUMNS,
    NUMERIC_COLUMNS,
    Exclusions,
)
from segstream.training.fit_report import compare_silhouettes, fit_html, fit_notes
from segstream.training.lineage_report import lineage_html
from segstream.training.plots import figure, img_tag, png, sample_rows, segment_colour

__all__ = [
    "AGE_BIN_WIDTH",
    "AGE_EDGES",
    "SCATTER_POINTS",
    "SegmentProfile",
    "TopValue",
    "age_png",
    "elbow_png",
    "exclusions_html",
    "profile_segments",
    "render_html",
    "scatter_png",
    "sizes_png",
    "summary_table",
]

SCATTER_POINTS = 20_000
"""Most points drawn in the component scatter; larger data is sampled (seeded)."""
_TOP = 3
AGE_BIN_WIDTH = 5
"""Width of the age histograms' bins, in years."""
AGE_EDGES: np.ndarray = np.arange(0, 120 + AGE_BIN_WIDTH, AGE_BIN_WIDTH)
"""Edges of the age bins: [0, 5), [5, 10), ... [115, 120]; ages outside 0..120 (the input
schema's range) are counted in the first or last bin."""
_TOP_COLUMNS = tuple(c for c in FEATURE_COLUMNS if c != "age")
"""Columns of the report's top-values table (age has its histograms instead)."""


@dataclass(frozen=True)
class TopValue:
    """A value of a column and its share of the segment's users, in percent."""

    value: str
    share: float


@dataclass(frozen=True)
class SegmentProfile:
    """One segment: size, share of all users (%), top values per column, numeric means.

    ``age_counts[i]``: the segment's users aged in bin ``i`` of :data:`AGE_EDGES` (they add
    up to ``size``).
    """

    segment: int
    size: int
    share: float
    top_values: dict[str, tuple[TopValue, ...]]
    means: dict[str, float]
    age_counts: tuple[int, ...] = ()


def profile_segments(
    features: pd.DataFrame, segments: np.ndarray, k: int, top: int = _TOP
) -> tuple[SegmentProfile, ...]:
    """Profile each of the ``k`` segments of ``features`` (aligned with ``segments``).

    A segment with no rows still gets a profile (size 0, no top values, NaN means).
    """
    seg = pd.Series(np.asarray(segments), index=features.index, name="segment")
    sizes = seg.value_counts().reindex(range(k), fill_value=0)
    total = max(int(sizes.sum()), 1)
    tops: dict[str, dict[int, tuple[TopValue, ...]]] = {}
    for column in FEATURE_COLUMNS:
        counts = (
            pd.DataFrame({"segment": seg, "value": features[column].astype(str)})
            .value_counts()
            .rename("n")
            .reset_index()
            .sort_values(["segment", "n", "value"], ascending=[True, False, True], kind="stable")
        )
        head = counts.groupby("segment", sort=True).head(top)
        tops[column] = {
            int(s): tuple(
                TopValue(str(v), 100.0 * n / sizes[s])
                for v, n in zip(g["value"], g["n"], strict=True)
            )
            for s, g in head.groupby("segment", sort=True)
        }
    means = features[list(NUMERIC_COLUMNS)].groupby(seg).mean().reindex(range(k))
    ages = np.clip(features["age"].to_numpy(dtype=np.float64), AGE_EDGES[0], AGE_EDGES[-1])
    labels = seg.to_numpy()
    age_counts = {
        s: tuple(int(n) for n in np.histogram(ages[labels == s], bins=AGE_EDGES)[0])
        for s in range(k)
    }
    return tuple(
        SegmentProfile(
            segment=s,
            size=int(sizes[s]),
            share=100.0 * int(sizes[s]) / total,
            top_values={c: tops[c].get(s, ()) for c in FEATURE_COLUMNS},
            means={c: float(means.loc[s, c]) for c in NUMERIC_COLUMNS},
            age_counts=age_counts[s],
        )
        for s in range(k)
    )


def elbow_png(model: Model) -> bytes:
    """SSE versus k with the chosen k marked, and the sampled silhouette on a second axis."""
    fig, ax = figure(7, 4)
    ax.plot(model.k_values, model.sse, "o-", color="#1f4e79", label="SSE (inertia)")
    if model.k in model.k_values:
        chosen_sse = model.sse[model.k_values.index(model.k)]
        ax.axvline(model.k, color="#c0392b", linestyle="--", linewidth=1)
        ax.plot(
            [model.k],
            [chosen_sse],
            "o",
            markersize=14,
            markerfacecolor="none",
            markeredgecolor="#c0392b",
            markeredgewidth=2,
            label=f"chosen k = {model.k}",
        )
    ax.set_xlabel("k (number of segments)")
    ax.set_ylabel("SSE")
    ax.set_xticks(list(model.k_values))
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    sil = [math.nan if s is None else s for s in model.silhouette]
    ax2.plot(model.k_values, sil, "s:", color="#7f8c8d", label="silhouette (sample)")
    ax2.set_ylabel("silhouette")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(
        lines[0] + lines2[0],
        lines[1] + lines2[1],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=3,
        frameon=False,
    )
    ax.set_title("Elbow: SSE and silhouette by k")
    return png(fig)


def scatter_png(model: Model, components: np.ndarray, segments: np.ndarray, seed: int = 0) -> bytes:
    """The two PCA components coloured by segment, centres marked; sampled when large."""
    n = components.shape[0]
    rows = sample_rows(n, SCATTER_POINTS, seed)
    fig, ax = figure(7, 5.5)
    for s in range(model.k):
        mine = rows[segments[rows] == s]
        ax.scatter(
            components[mine, 0],
            components[mine, 1],
            s=4,
            alpha=0.5,
            color=segment_colour(s),
            label=f"segment {s}",
            rasterized=True,
        )
    ax.scatter(
        model.centers[:, 0],
        model.centers[:, 1],
        marker="X",
        s=160,
        c="black",
        edgecolors="white",
        linewidths=1.5,
        label="centres",
    )
    ax.set_xlabel("component 1")
    ax.set_ylabel("component 2")
    shown = f"{rows.size:,} of {n:,} users" if rows.size < n else f"all {n:,} users"
    ax.set_title(f"Segments in PCA space ({shown})")
    # Proxy handles: legend markers of one readable size, whatever the plotted sizes.
    handles = [
        Line2D([], [], marker="o", linestyle="", color=segment_colour(s), label=f"segment {s}")
        for s in range(model.k)
    ]
    handles.append(Line2D([], [], marker="X", linestyle="", color="black", label="centre"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return png(fig)


def sizes_png(profiles: Sequence[SegmentProfile]) -> bytes:
    """Bar chart of the number of users per segment, labelled with the share."""
    fig, ax = figure(7, 3.2)
    ids = [p.segment for p in profiles]
    bars = ax.bar(
        [str(i) for i in ids], [p.size for p in profiles], color=[segment_colour(i) for i in ids]
    )
    for bar, p in zip(bars, profiles, strict=True):
        ax.annotate(
            f"{p.share:.1f}%",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_xlabel("segment")
    ax.set_ylabel("users")
    ax.set_title("Segment sizes")
    ax.margins(y=0.12)  # room for the share labels above the bars
    ax.grid(axis="y", alpha=0.3)
    return png(fig)


def age_png(profiles: Sequence[SegmentProfile]) -> bytes:
    """One age histogram per segment, stacked on one age axis, as % of the segment's users.

    Only the bins from the youngest to the oldest user of any segment are drawn; the dashed
    line is the segment's mean age.
    """
    counts = np.array([p.age_counts for p in profiles], dtype=np.float64).reshape(len(profiles), -1)
    used = np.flatnonzero(counts.sum(axis=0)) if counts.size else np.empty(0, dtype=int)
    lo, hi = (int(used[0]), int(used[-1]) + 1) if used.size else (0, len(AGE_EDGES) - 1)
    fig = Figure(figsize=(7, 0.9 * max(len(profiles), 1) + 1.0))
    axes = fig.subplots(max(len(profiles), 1), 1, sharex=True, squeeze=False)[:, 0]
    for ax, p, row in zip(axes, profiles, counts, strict=False):
        share = 100.0 * row / max(p.size, 1)
        ax.bar(
            AGE_EDGES[lo:hi],
            share[lo:hi],
            width=AGE_BIN_WIDTH,
            align="edge",
            color=segment_colour(p.segment),
            edgecolor="white",
        )
        if not math.isnan(p.means["age"]):
            ax.axvline(p.means["age"], color="#222", linestyle="--", linewidth=1)
        ax.set_ylabel(f"seg {p.segment}\n% users", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xlabel(f"age ({AGE_BIN_WIDTH}-year bins; dashed: the segment's mean)")
    axes[0].set_title("Age per segment (share of the segment's users)")
    return png(fig)


def exclusions_html(model: Model) -> str:
    """The report's section on who was segmented and who was left out, and why."""
    exclusions = Exclusions.from_json(model.extra.get("exclusions"))
    head = "<h2>Who is segmented</h2>"
    if exclusions is None:
        return (
            f"{head}<p>{model.n_rows:,} users segmented. Who was left out was not recorded "
            "(a version trained before segstream counted it).</p>"
        )
    x = exclusions
    rows = [("no order at all", x.no_orders)] + [
        (f"has orders, {reason}", x.missing[column]) for column, reason in EXCLUSION_REASONS.items()
    ]
    rows += [
        (f"a value the input rules refuse: {key} (e.g. {x.refused_examples.get(key, '?')})", n)
        for key, n in x.refused.items()
    ]
    body = "".join(f"<tr><td>{html.escape(r)}</td><td class=num>{n:,}</td></tr>" for r, n in rows)
    segmented = x.segmented - x.refused_total
    lines = [
        f"<p>{x.users:,} users in the data: {segmented:,} segmented, {x.excluded:,} left out "
        f"by the feature query ({x.no_orders:,} without any order, {x.missing_features:,} with "
        "orders but a missing feature; a user can miss several)"
        + (
            f", {x.refused_total:,} for a value the input rules refuse (the table in "
            "segstream/training/inputs.py, which the stream and the API apply too)"
            if x.refused_total
            else ""
        )
        + ".</p>",
        f"<table><tr><th>reason</th><th>users</th></tr>{body}</table>",
    ]
    dropped = model.extra.get("dropped_rows")
    dropped = dropped if isinstance(dropped, int) else 0
    if model.n_rows + dropped + x.refused_total != x.segmented:
        lines.append(
            f'<p class="note">training read {model.n_rows + dropped:,} users but the count found '
            f"{x.segmented:,}: the data changed between the two reads.</p>"
        )
    elif dropped:
        lines.append(f"<p>Training dropped {dropped:,} more rows with a missing value.</p>")
    return head + "\n".join(lines)


def _top_cell(values: Sequence[TopValue]) -> str:
    return "<br>".join(f"{html.escape(v.value)} <small>({v.share:.1f}%)</small>" for v in values)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f3f7; } small { color: #666; } .num { text-align: right; }
.plots { display: flex; flex-wrap: wrap; align-items: flex-start; }
.plots img { max-width: 100%; margin: 0.5em 1em 0.5em 0; border: 1px solid #eee; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: 600; }
.note { background: #fff4e5; border-left: 4px solid #e67e22; padding: 0.5em 0.8em;
        max-width: 60em; }
"""


def render_html(
    model: Model,
    profiles: Sequence[SegmentProfile],
    components: np.ndarray,
    segments: np.ndarray,
) -> str:
    """The whole report as one self-contained HTML document (plots embedded as PNG)."""
    e = html.escape
    exclusions = Exclusions.from_json(model.extra.get("exclusions"))
    facts = {
        "version": model.version,
        "created": model.created_at,
        "users segmented": f"{model.n_rows:,}"
        + (f" of {exclusions.users:,} in the data" if exclusions else ""),
        "k": f"{model.k} ({model.k_selection})",
        "explained variance": ", ".join(f"{v:.1%}" for v in model.explained_variance_ratio),
        "seed": str(model.seed),
        "data fingerprint": model.data_fingerprint[:16],
    }
    facts_html = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in facts.items())
    notes = "".join(f'<p class="note">{e(note)}</p>' for note in fit_notes(model))
    head = "".join(f"<th>{e(c)}</th>" for c in _TOP_COLUMNS)
    rows = "".join(
        f"<tr><td>{p.segment}</td><td class=num>{p.size:,}</td><td class=num>{p.share:.1f}%</td>"
        + "".join(f"<td>{_top_cell(p.top_values[c])}</td>" for c in _TOP_COLUMNS)
        + "</tr>"
        for p in profiles
    )
    mean_head = "".join(f"<th>mean {e(c)}</th>" for c in NUMERIC_COLUMNS)
    mean_rows = "".join(
        f"<tr><td>{p.segment}</td><td class=num>{p.size:,}</td>"
        + "".join(f"<td class=num>{p.means[c]:.2f}</td>" for c in NUMERIC_COLUMNS)
        + "</tr>"
        for p in profiles
    )
    elbow_rows = "".join(
        f"<tr><td>{k}{' (chosen)' if k == model.k else ''}</td><td class=num>{s:,.1f}</td>"
        f"<td class=num>{sil:.3f}</td></tr>"
        for k, s, sil in zip(model.k_values, model.sse, model.silhouette, strict=True)
    )
    comparison = compare_silhouettes(model)
    silhouettes = f"<p>{e(comparison.sentence())}</p>" if comparison else ""
    plots = "".join(
        (
            img_tag(elbow_png(model), "elbow chart"),
            img_tag(scatter_png(model, components, segments, model.seed), "component scatter"),
            img_tag(sizes_png(profiles), "segment sizes"),
        )
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>segstream model {e(model.version)}</title><style>{_STYLE}</style></head><body>
<h1>Customer segments: model {e(model.version)}</h1>
<dl>{facts_html}</dl>
{notes}
<div class="plots">{plots}</div>
{exclusions_html(model)}
{fit_html(model, components, segments)}
<h2>Segments: top {_TOP} values per column (share inside the segment)</h2>
<table><tr><th>segment</th><th>users</th><th>share of all users</th>{head}</tr>{rows}</table>
<h3>Age per segment</h3>
<div class="plots">{img_tag(age_png(profiles), "age histograms")}</div>
<h2>Numeric features: per-segment means</h2>
<table><tr><th>segment</th><th>users</th>{mean_head}</tr>{mean_rows}</table>
<h2>Elbow</h2>
<table><tr><th>k</th><th>SSE</th><th>silhouette (sample)</th></tr>{elbow_rows}</table>
{silhouettes}
{lineage_html(model.lineage)}
</body></html>
"""


def _label(column: str) -> str:
    """A feature column's short name in the terminal summary."""
    return column.replace("total_", "").replace("most_frequent_", "").replace("_source", "")


def _top(profile: SegmentProfile, column: str) -> str:
    tops = profile.top_values[column]
    return f"{tops[0].value} ({tops[0].share:.0f}%)" if tops else "-"


def _wide_summary(model: Model, profiles: Sequence[SegmentProfile]) -> Table:
    table = Table(title=f"model {model.version}: {model.n_rows:,} users, k={model.k}")
    table.add_column("seg", justify="right")
    table.add_column("users", justify="right")
    table.add_column("share", justify="right")
    categorical = [c for c in FEATURE_COLUMNS if c not in NUMERIC_COLUMNS]
    for column in NUMERIC_COLUMNS:
        table.add_column(f"mean {_label(column)}", justify="right")
    for column in categorical:
        table.add_column(_label(column))
    for p in profiles:
        means = [f"{p.means[c]:.1f}" for c in NUMERIC_COLUMNS]
        tops = [_top(p, c) for c in categorical]
        table.add_row(str(p.segment), f"{p.size:,}", f"{p.share:.1f}%", *means, *tops)
    return table


def _narrow_summary(model: Model, profiles: Sequence[SegmentProfile]) -> Table:
    table = Table(
        title=f"model {model.version}: {model.n_rows:,} users, k={model.k}", show_lines=True
    )
    table.add_column("seg", justify="right")
    table.add_column("users", justify="right")
    table.add_column("profile (mean, or most frequent value and its share)", overflow="fold")
    for p in profiles:
        lines = [", ".join(f"{_label(c)} {p.means[c]:.1f}" for c in NUMERIC_COLUMNS)]
        lines += [f"{_label(c)} {_top(p, c)}" for c in FEATURE_COLUMNS if c not in NUMERIC_COLUMNS]
        table.add_row(str(p.segment), f"{p.size:,}\n{p.share:.1f}%", "\n".join(lines))
    return table


def summary_table(
    model: Model, profiles: Sequence[SegmentProfile], width: int | None = None
) -> Table:
    """The report's summary as a rich table: one row per segment, its means and top values.

    With ``width`` (the terminal's columns), a table one column per feature is returned only
    if every cell fits whole; otherwise each segment's profile is laid out as lines in one
    column, which folds rather than truncates. Without ``width``, the wide table.
    """
    wide = _wide_summary(model, profiles)
    if width is None:
        return wide
    # Measured on a console wider than any table: rich clamps a measure to the console.
    console = Console(width=100_000, file=io.StringIO())
    if Measurement.get(console, console.options, wide).maximum <= width:
        return wide
    return _narrow_summary(model, profiles)
