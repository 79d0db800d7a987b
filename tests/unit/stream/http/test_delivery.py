"""The status page's Delivery section: growth, warnings and each destination's entry."""

from __future__ import annotations

from segstream.settings import load_settings
from segstream.stream.http.delivery import (
    BEHIND_WARN_S,
    DeliveryGroups,
    DeliveryWatch,
    LetterTally,
    backlog_growth,
    destination_doc,
    destination_warnings,
)
from segstream.stream.kafka.lag import LagSnapshot, partition_lag

GROUP = "app-deliver-crm"


def _snapshot(*lags: tuple[int, int, int | None]) -> LagSnapshot:
    """Partitions of ``(committed, end, first pending ms)``, read at t=100 s."""
    partitions = tuple(
        partition_lag(
            "segment-changes",
            p,
            committed=committed,
            start=0,
            end=end,
            first_pending_ms=first,
            now_ms=100_000,
        )
        for p, (committed, end, first) in enumerate(lags)
    )
    return LagSnapshot(GROUP, 100.0, partitions)


class TestBacklogGrowth:
    def test_too_few_or_too_close_samples_tell_nothing(self) -> None:
        assert backlog_growth([]) is None
        assert backlog_growth([(0.0, 5)]) is None
        assert backlog_growth([(0.0, 5), (4.0, 50)], window_s=10.0) is None

    def test_growth_is_the_newest_minus_the_oldest_sample_of_the_window(self) -> None:
        history = [(0.0, 1_000), (50.0, 10), (52.0, 30), (60.0, 70)]
        assert backlog_growth(history, window_s=10.0) == 60

    def test_a_draining_backlog_shrinks(self) -> None:
        assert backlog_growth([(0.0, 300), (6.0, 100), (10.0, 0)], window_s=10.0) == -300


class TestWarnings:
    def test_a_healthy_destination_has_none(self) -> None:
        assert destination_warnings(GROUP, members=2, backlog=0, seconds_behind=0.0, growth=0) == []
        # Changes in flight between two POSTs, the oldest fresh: normal flow.
        fresh = destination_warnings(GROUP, members=1, backlog=40, seconds_behind=0.3, growth=5)
        assert fresh == []

    def test_figures_not_read_yet_raise_nothing(self) -> None:
        unread = destination_warnings(
            GROUP, members=None, backlog=None, seconds_behind=None, growth=None
        )
        assert unread == []

    def test_an_empty_group_names_the_group_and_what_to_start(self) -> None:
        (warning,) = destination_warnings(
            GROUP, members=0, backlog=0, seconds_behind=0.0, growth=None
        )
        assert GROUP in warning and "segstream deliver" in warning
        assert "SEGSTREAM_DELIVERY_CONFIG" in warning

    def test_an_old_backlog_is_flagged_with_its_age_and_its_growth(self) -> None:
        (warning,) = destination_warnings(
            GROUP, members=1, backlog=1_200, seconds_behind=BEHIND_WARN_S + 32, growth=300
        )
        assert warning.startswith("1200 changes not delivered, the oldest 42 s old")
        assert "growing (+300 in 10 s)" in warning

    def test_a_stuck_backlog_that_does_not_grow_is_flagged_too(self) -> None:
        (warning,) = destination_warnings(
            GROUP, members=1, backlog=7, seconds_behind=600.0, growth=0
        )
        assert "7 changes not delivered" in warning and "growing" not in warning

    def test_a_backlog_of_unknown_age_is_flagged(self) -> None:
        (warning,) = destination_warnings(
            GROUP, members=1, backlog=3, seconds_behind=None, growth=None
        )
        assert "of unknown age" in warning

    def test_dead_letters_waiting_say_how_to_send_them_again(self) -> None:
        (warning,) = destination_warnings(
            GROUP, members=1, backlog=0, seconds_behind=0.0, growth=None, dead_letters=12
        )
        assert warning.startswith("12 dead letters not received by the destination")
        assert "segstream deliver --redrive" in warning
        none = destination_warnings(
            GROUP, members=1, backlog=0, seconds_behind=0.0, growth=None, dead_letters=0
        )
        assert none == []

    def test_both_problems_at_once_give_two_warnings(self) -> None:
        warnings = destination_warnings(GROUP, members=0, backlog=9, seconds_behind=99.0, growth=9)
        assert len(warnings) == 2


class TestDestinationDoc:
    def test_before_the_first_read_the_state_is_unknown(self) -> None:
        doc = destination_doc(
            "crm", GROUP, snapshot=None, members=None, growth=None, error="not read yet"
        )
        assert (doc["state"], doc["backlog"], doc["members"]) == ("unknown", None, None)
        assert (doc["partitions"], doc["warnings"], doc["error"]) == ([], [], "not read yet")

    def test_a_drained_destination_with_a_process_is_ok(self) -> None:
        doc = destination_doc(
            "crm", GROUP, snapshot=_snapshot((10, 10, None), (4, 4, None)), members=1,
            growth=0, error=None,
        )  # fmt: skip
        assert (doc["state"], doc["backlog"], doc["seconds_behind"]) == ("ok", 0, 0.0)
        assert doc["partitions"] == [
            {"partition": 0, "committed": 10, "end": 10, "lag": 0},
            {"partition": 1, "committed": 4, "end": 4, "lag": 0},
        ]
        assert (doc["name"], doc["group"], doc["taken_at"]) == ("crm", GROUP, 100.0)

    def test_a_destination_that_is_down_is_a_warning_with_its_backlog(self) -> None:
        # Partition 0: 90 pending, the oldest published at t=40 s, 60 s before the read.
        snapshot = _snapshot((10, 100, 40_000), (None, 5, 95_000))
        doc = destination_doc("crm", GROUP, snapshot=snapshot, members=1, growth=20, error=None)
        assert (doc["backlog"], doc["seconds_behind"], doc["growth"]) == (95, 60.0, 20)
        assert doc["state"] == "warning"
        assert doc["warnings"][0].startswith("95 changes not delivered, the oldest 60 s old")
        assert [p["committed"] for p in doc["partitions"]] == [10, None]


class TestWatchBeforeItsFirstRead:
    def test_every_figure_is_unknown_not_zero(self) -> None:
        groups = DeliveryGroups(
            config="delivery.toml",
            destinations=(("crm", GROUP),),
            dead_letter_topic="letters",
            redrive_group="app-deliver-redrive",
        )
        doc = DeliveryWatch(load_settings(), groups).document()
        (crm,) = doc["destinations"]
        assert (crm["state"], crm["backlog"], crm["members"]) == ("unknown", None, None)
        assert doc["error"] == crm["error"] == "not read yet"
        assert doc["dead_letters"]["waiting"] is None and doc["warnings"] == 0
        assert doc["dead_letters"]["by_destination"] is None
        assert doc["dead_letters"]["complete"] is False and crm["dead_letters"] is None

    def test_a_config_error_is_the_sections_error(self) -> None:
        groups = DeliveryGroups(
            "bad.toml", (), "letters", "app-deliver-redrive", error="bad.toml: no"
        )
        doc = DeliveryWatch(load_settings(), groups).document()
        assert (doc["error"], doc["destinations"], doc["config"]) == (
            "bad.toml: no",
            [],
            "bad.toml",
        )


class TestLetterTally:
    def test_consecutive_letters_of_one_destination_make_one_run(self) -> None:
        tally = LetterTally()
        for offset in range(10, 15):
            tally.add(0, offset, "crm")
        tally.add(0, 15, "recs")
        tally.add(1, 0, "crm")
        assert tally.counts() == {"crm": 6, "recs": 1}
        assert tally.next == {0: 16, 1: 1}

    def test_letters_redriven_are_forgotten_even_within_a_run(self) -> None:
        tally = LetterTally()
        for offset in range(0, 10):
            tally.add(0, offset, "crm" if offset < 6 else "recs")
        assert tally.trim(0, 4) == 10  # --redrive committed 4: letters 0..3 are done
        assert tally.counts() == {"crm": 2, "recs": 4}
        assert tally.trim(0, 10) == 10
        assert tally.counts() == {}

    def test_a_resume_past_what_was_read_skips_ahead(self) -> None:
        tally = LetterTally()
        tally.add(0, 0, "crm")
        assert tally.trim(0, 50) == 50  # redriven (or deleted) before this page read them
        assert tally.trim(3, 7) == 7  # a partition not read yet starts at its resume offset
        assert tally.counts() == {}

    def test_a_gap_in_offsets_starts_a_new_run_so_counts_stay_exact(self) -> None:
        tally = LetterTally()
        tally.add(0, 0, "crm")
        tally.add(0, 5, "crm")
        assert tally.counts() == {"crm": 2}
