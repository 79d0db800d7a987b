"""The table ``segstream lag`` prints."""

from __future__ import annotations

from rich.console import Console

from segstream.cli.ops import lag_problems, lag_table
from segstream.stream.kafka.lag import LagSnapshot, partition_lag


def render(snapshot: LagSnapshot) -> list[str]:
    console = Console(record=True, width=60, color_system=None)
    console.print(lag_table(snapshot))
    return console.export_text().splitlines()


def test_one_row_per_partition_and_a_total_row_with_full_topic_names() -> None:
    topic = "orders-0123456789abcdef"
    snapshot = LagSnapshot(
        "workers",
        0.0,
        (
            partition_lag(
                topic, 0, committed=5, start=0, end=9, first_pending_ms=1_000, now_ms=13_500
            ),
            partition_lag(
                topic, 1, committed=None, start=0, end=0, first_pending_ms=None, now_ms=13_500
            ),
        ),
    )
    lines = render(snapshot)
    assert "consumer group workers" in lines[0]
    rows = [line.replace("│", " ").split() for line in lines if topic in line]
    assert rows == [
        [topic, "0", "5", "9", "4", "12.5"],
        [topic, "1", "none", "0", "0", "0.0"],
    ]
    total = next(line.replace("│", " ").split() for line in lines if "total" in line)
    assert total == ["total", "4", "12.5"]


def test_unknown_age_is_printed_as_unknown() -> None:
    snapshot = LagSnapshot(
        "g",
        0.0,
        (partition_lag("t", 0, committed=0, start=0, end=3, first_pending_ms=None, now_ms=0),),
    )
    total = next(line.replace("│", " ").split() for line in render(snapshot) if "total" in line)
    assert total == ["total", "3", "unknown"]


def test_a_reading_of_existing_topics_of_a_known_group_has_no_problem() -> None:
    assert lag_problems(LagSnapshot("g", 0.0, ()), group_option=False) == []


def test_missing_topics_and_an_unknown_group_are_each_named_with_the_setting() -> None:
    snapshot = LagSnapshot("nosuch", 0.0, (), missing_topics=("a", "b"), group_known=False)
    topics, group = lag_problems(snapshot, group_option=True)
    assert topics.startswith("topic(s) a, b do not exist") and "--topic" in topics
    assert "'nosuch' is unknown to the cluster" in group and "--group" in group
    (default,) = lag_problems(
        LagSnapshot("segstream", 0.0, (), group_known=False), group_option=False
    )
    assert "SEGSTREAM_APP_ID" in default
