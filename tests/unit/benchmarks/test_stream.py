"""The bench's reading of the phase times a worker logged when it stopped."""

from __future__ import annotations

from pathlib import Path

from benchmarks.stream import phase_rows, read_phases


def test_the_last_phases_line_of_the_log_is_read(tmp_path: Path) -> None:
    log = tmp_path / "worker-1.log"
    log.write_text(
        '[2026-12-07 03:00:00] INFO segstream.stream.worker.app: phases {"span_s": 1.0}\n'
        '[2026-12-07 03:00:01] INFO segstream.stream.worker.app: phases {"span_s": 2.0, '
        '"redis apply": 0.5, "publish + acks": 1.5}\n'
        "[2026-12-07 03:00:02] INFO faust: stopped\n"
    )
    assert read_phases(log) == {"span_s": 2.0, "redis apply": 0.5, "publish + acks": 1.5}


def test_a_log_without_phases_gives_none(tmp_path: Path) -> None:
    log = tmp_path / "worker-1.log"
    log.write_text("killed before its first batch\n")
    assert read_phases(log) == {}


def test_rows_give_seconds_share_of_the_span_and_microseconds_per_event() -> None:
    rows = phase_rows({"span_s": 2.0, "redis apply": 0.5, "publish + acks": 1.5}, 1000)
    assert rows == [
        ("redis apply", "0.50", "25%", "500.0"),
        ("publish + acks", "1.50", "75%", "1500.0"),
        ("span (first batch to last)", "2.00", "100%", "2000.0"),
    ]
