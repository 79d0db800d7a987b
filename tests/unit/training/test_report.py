"""The per-segment report: the notebook's profile table and a self-contained HTML page."""

from __future__ import annotations

import dataclasses
import html
import re

import numpy as np
import pandas as pd
import pytest
from rich.table import Table

from segstream.training.features import EXCLUSION_REASONS, Exclusions
from segstream.training.lineage import Lineage
from segstream.training.lineage_report import lineage_renderables, moved_sentence
from segstream.training.pipeline import PreviousVersion, follow_previous
from segstream.training.report import (
    AGE_EDGES,
    exclusions_html,
    profile_segments,
    render_html,
    summary_table,
)
from segstream.training.train import TrainConfig, TrainResult, fit


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": range(1, 9),
            "age": [20, 30, 40, 50, 60, 60, 60, 70],
            "gender": ["F", "F", "M", "F", "M", "M", "M", "F"],
            "country": ["China", "Brasil", "China", "Spain", "Japan", "Japan", "Spain", "Japan"],
            "traffic_source": ["Search"] * 8,
            "total_orders": [1, 1, 2, 3, 1, 1, 1, 4],
            "most_frequent_brand": ["a", "b", "c", "d", "e", "e", "f", "g"],
            "most_frequent_category": ["Jeans"] * 8,
        }
    )


def test_profile_has_top_three_values_with_shares_inside_the_segment(frame: pd.DataFrame) -> None:
    segments = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    profiles = profile_segments(frame, segments, k=2)
    first, second = profiles
    assert (first.size, second.size) == (4, 4)
    assert first.share == second.share == 50.0
    # Segment 0 countries: China 2, Brasil 1, Spain 1 -> ties by value, code point order.
    assert [(v.value, v.share) for v in first.top_values["country"]] == [
        ("China", 50.0),
        ("Brasil", 25.0),
        ("Spain", 25.0),
    ]
    assert [(v.value, v.share) for v in second.top_values["gender"]] == [("M", 75.0), ("F", 25.0)]
    assert [v.value for v in second.top_values["age"]] == ["60", "70"]
    assert first.means == {"age": 35.0, "total_orders": 1.75}


def test_empty_segment_still_gets_a_row(frame: pd.DataFrame) -> None:
    profiles = profile_segments(frame, np.zeros(8, dtype=int), k=3)
    assert [p.size for p in profiles] == [8, 0, 0]
    assert profiles[2].top_values["country"] == ()
    assert np.isnan(profiles[2].means["age"])


def test_html_report_is_self_contained_with_its_plots_and_tables(small_fit: TrainResult) -> None:
    model = small_fit.model
    profiles = profile_segments(small_fit.features, small_fit.segments, model.k)
    page = render_html(model, profiles, small_fit.components, small_fit.segments)
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert images == [
        "elbow chart",
        "component scatter",
        "segment sizes",
        "biplot",
        "age histograms",
    ]
    assert not re.search(r"(src|href)=\"(?!data:)", page), "nothing may be fetched from elsewhere"
    assert page.count("<tr><td>") >= 2 * model.k + len(model.k_values)
    assert f"{model.k} (chosen)" in page
    for column in ("most_frequent_brand", "mean total_orders", "share of all users"):
        assert column in page


def test_report_escapes_values(frame: pd.DataFrame, small_fit: TrainResult) -> None:
    frame.loc[0, "most_frequent_brand"] = "<script>alert(1)</script>"
    profiles = profile_segments(frame, np.zeros(8, dtype=int), k=small_fit.model.k)
    page = render_html(small_fit.model, profiles, np.zeros((8, 2)), np.zeros(8, dtype=int))
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_terminal_summary_has_a_row_per_segment(small_fit: TrainResult) -> None:
    profiles = profile_segments(small_fit.features, small_fit.segments, small_fit.model.k)
    table = summary_table(small_fit.model, profiles)
    assert table.row_count == small_fit.model.k


def test_report_shows_the_segment_mapping_and_the_users_who_moved(
    small_fit: TrainResult,
) -> None:
    q = np.array([1, 0, 3, 2])
    previous = dataclasses.replace(small_fit.model, centers=small_fit.model.centers[q])
    retrained = fit(
        small_fit.features, TrainConfig(k=4, k_values=(4,), seed=6, silhouette_sample=200)
    )
    followed = follow_previous(retrained, PreviousVersion(previous.version, previous))
    model = followed.model
    lineage = model.lineage
    assert lineage is not None and lineage.transitions is not None
    profiles = profile_segments(followed.features, followed.segments, model.k)

    page = render_html(model, profiles, followed.components, followed.segments)

    assert f"segment ids follow {previous.version}" in page
    assert page.count("<th>previous ") == 4 and page.count("<th>new ") == 4
    for m in lineage.matches:
        assert f"<tr><td>{m.segment}</td><td>{m.previous}</td>" in page
    assert moved_sentence(lineage.transitions) in page
    kept = lineage.transitions.kept
    assert kept == int((followed.segments == np.argsort(q)[small_fit.segments]).sum())
    printed = lineage_renderables(lineage)
    assert [type(r) for r in printed] == [str, Table, Table, str]
    assert printed[-1] == moved_sentence(lineage.transitions)
    assert f"{kept:,} of {len(followed.segments):,} users" in printed[-1]


def test_report_says_why_a_version_was_not_aligned(small_fit: TrainResult) -> None:
    reason = "not aligned to v0: it cannot be used (incompatible model schema version 2)"
    model = dataclasses.replace(small_fit.model, lineage=Lineage("v0", False, reason))
    profiles = profile_segments(small_fit.features, small_fit.segments, model.k)
    page = render_html(model, profiles, small_fit.components, small_fit.segments)
    assert html.escape(reason) in page and "matched previous segment" not in page
    assert lineage_renderables(model.lineage) == [reason]


def test_age_histograms_count_every_user_of_each_segment_in_five_year_bins(
    frame: pd.DataFrame,
) -> None:
    frame.loc[7, "age"] = 130  # beyond the schema's 120: counted in the last bin
    first, second = profile_segments(frame, np.array([0, 0, 0, 0, 1, 1, 1, 1]), k=2)
    assert len(first.age_counts) == len(AGE_EDGES) - 1 == 24
    assert sum(first.age_counts) == first.size and sum(second.age_counts) == second.size
    # Segment 0: 20, 30, 40, 50 -> bins [20, 25), [30, 35), [40, 45), [50, 55).
    assert {i: n for i, n in enumerate(first.age_counts) if n} == {4: 1, 6: 1, 8: 1, 10: 1}
    # Segment 1: 60 three times and 130 -> [60, 65) and [115, 120].
    assert {i: n for i, n in enumerate(second.age_counts) if n} == {12: 3, 23: 1}


def test_the_top_values_table_has_no_age_column_the_histograms_stand_in(
    small_fit: TrainResult,
) -> None:
    profiles = profile_segments(small_fit.features, small_fit.segments, small_fit.model.k)
    page = render_html(small_fit.model, profiles, small_fit.components, small_fit.segments)
    top_table = page.split("top 3 values per column")[1].split("</table>")[0]
    assert "<th>age</th>" not in top_table and "<th>gender</th>" in top_table
    assert 'alt="age histograms"' in page.split("Age per segment")[1]


EXCLUSIONS = Exclusions(
    users=20_000,
    segmented=15_965,
    no_orders=3_990,
    missing=dict.fromkeys(EXCLUSION_REASONS, 0) | {"most_frequent_brand": 40, "age": 7},
)


def _stored(small_fit: TrainResult, exclusions: Exclusions, dropped: int = 0) -> TrainResult:
    model = dataclasses.replace(
        small_fit.model,
        n_rows=exclusions.segmented - dropped,
        extra={
            **small_fit.model.extra,
            "dropped_rows": dropped,
            "exclusions": exclusions.to_json(),
        },
    )
    return dataclasses.replace(small_fit, model=model)


def test_report_counts_the_users_left_out_with_their_reasons(small_fit: TrainResult) -> None:
    fitted = _stored(small_fit, EXCLUSIONS)
    section = exclusions_html(fitted.model)
    assert (
        "20,000 users in the data: 15,965 segmented, 4,035 left out by the feature query "
        "(3,990 without any order, 45 with orders but a missing feature" in section
    )
    assert "<td>no order at all</td><td class=num>3,990</td>" in section
    assert "<td>has orders, no item with a known brand</td><td class=num>40</td>" in section
    assert "<td>has orders, no age</td><td class=num>7</td>" in section
    assert 'class="note"' not in section
    profiles = profile_segments(fitted.features, fitted.segments, fitted.model.k)
    page = render_html(fitted.model, profiles, fitted.components, fitted.segments)
    assert section in page and "15,965 of 20,000 in the data" in page


def test_report_says_when_the_counts_disagree_with_the_rows_trained_on(
    small_fit: TrainResult,
) -> None:
    dropped = _stored(small_fit, EXCLUSIONS, dropped=3)
    assert "Training dropped 3 more rows" in exclusions_html(dropped.model)
    changed = dataclasses.replace(dropped.model, n_rows=15_000)
    assert "the data changed between the two reads" in exclusions_html(changed)


def test_report_of_an_older_version_says_the_exclusions_were_not_recorded(
    small_fit: TrainResult,
) -> None:
    assert "exclusions" not in small_fit.model.extra
    section = exclusions_html(small_fit.model)
    assert f"{small_fit.model.n_rows:,} users segmented" in section
    assert "not recorded" in section


def test_report_warns_at_its_top_when_the_components_keep_little_variance(
    small_fit: TrainResult,
) -> None:
    profiles = profile_segments(small_fit.features, small_fit.segments, small_fit.model.k)
    lossy = dataclasses.replace(small_fit.model, explained_variance_ratio=(0.209, 0.161))
    page = render_html(lossy, profiles, small_fit.components, small_fit.segments)
    top = page.split('<div class="plots">')[0]
    assert '<p class="note">two components keep only 37% of the variance' in top
    ample = dataclasses.replace(small_fit.model, explained_variance_ratio=(0.5, 0.2))
    page = render_html(ample, profiles, small_fit.components, small_fit.segments)
    assert "keep only" not in page


def test_report_counts_the_users_the_input_rules_refused(small_fit: TrainResult) -> None:
    example = "age must be a whole number from 0 to 120, got -41"
    refused = dataclasses.replace(
        EXCLUSIONS, refused={"age out_of_range": 5}, refused_examples={"age out_of_range": example}
    )
    model = dataclasses.replace(_stored(small_fit, refused).model, n_rows=15_960)
    section = exclusions_html(model)
    assert "20,000 users in the data: 15,960 segmented, 4,035 left out by the feature" in section
    assert ", 5 for a value the input rules refuse (the table in segstream/training" in section
    assert f"<td>a value the input rules refuse: age out_of_range (e.g. {example})</td>" in section
    assert "<td class=num>5</td>" in section
    assert 'class="note"' not in section  # 15,960 trained on + 5 refused = 15,965 queried
    assert Exclusions.from_json(refused.to_json()) == refused
