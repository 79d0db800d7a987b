"""The progress watchdog: which stalls it sees, when it reports, stops and ends the process."""

from __future__ import annotations

from segstream.stream.worker.watchdog import (
    EXIT_STALLED,
    Deadlines,
    Progress,
    Watchdog,
    find_stalls,
)

DEADLINES = Deadlines(batch_s=60.0, commit_s=30.0, grace_s=10.0, shutdown_s=5.0)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Observer:
    def __init__(self) -> None:
        self.stalls: list[str] = []

    def stall(self, kind: str) -> None:
        self.stalls.append(kind)


def test_a_batch_within_its_deadline_is_no_stall() -> None:
    clock = _Clock()
    progress = Progress(clock)
    progress.batch_start()
    clock.now += 60.0
    assert find_stalls(progress, clock.now, DEADLINES) == []


def test_a_batch_past_its_deadline_is_a_stall_naming_the_setting() -> None:
    clock = _Clock()
    progress = Progress(clock)
    progress.batch_start()
    clock.now += 61.0
    (stall,) = find_stalls(progress, clock.now, DEADLINES)
    assert stall.kind == "batch"
    assert stall.since == 1060.0
    assert "SEGSTREAM_BATCH_DEADLINE_S=60" in stall.reason
    progress.batch_end()
    assert find_stalls(progress, clock.now, DEADLINES) == []


def test_commits_failing_for_longer_than_the_deadline_are_a_stall_until_one_succeeds() -> None:
    clock = _Clock()
    progress = Progress(clock)
    progress.commit_failed(clock.now, "KafkaConnectionError")
    clock.now += 20.0
    assert find_stalls(progress, clock.now, DEADLINES) == []  # one failure: not yet
    progress.commit_failed(clock.now, "no answer within 30 s")
    clock.now += 11.0
    (stall,) = find_stalls(progress, clock.now, DEADLINES)
    assert stall.kind == "commit"
    assert "2 failed, last: no answer within 30 s" in stall.reason
    assert "SEGSTREAM_COMMIT_DEADLINE_S=30" in stall.reason
    progress.commit_done()
    assert find_stalls(progress, clock.now, DEADLINES) == []


def test_a_stall_is_reported_once_then_stops_the_worker_after_the_grace() -> None:
    clock = _Clock()
    progress = Progress(clock)
    observer = _Observer()
    stops: list[str] = []
    exits: list[int] = []
    dog = Watchdog(
        progress,
        DEADLINES,
        observer=observer,
        stop=stops.append,
        exit_process=exits.append,
    )
    progress.batch_start()
    clock.now += 61.0
    dog.check()
    dog.check()
    assert observer.stalls == ["batch"]
    assert len(dog.reasons()) == 1
    assert stops == []
    clock.now += 10.5  # past the grace
    dog.check()
    assert len(stops) == 1
    assert "a batch has been running" in stops[0]
    assert exits == []
    clock.now += 5.5  # the stop itself overran SEGSTREAM_SHUTDOWN_TIMEOUT_S
    dog.check()
    assert exits == [EXIT_STALLED]


def test_a_stop_that_overruns_ends_the_process() -> None:
    clock = _Clock()
    stopping = [False]
    exits: list[int] = []
    dog = Watchdog(
        Progress(clock), DEADLINES, stopping=lambda: stopping[0], exit_process=exits.append
    )
    dog.check()
    stopping[0] = True  # SIGTERM
    dog.check()
    clock.now += 4.0
    dog.check()
    assert exits == []
    clock.now += 1.5
    dog.check()
    assert exits == [1]


def test_a_worker_that_progresses_is_left_alone() -> None:
    clock = _Clock()
    progress = Progress(clock)
    exits: list[int] = []
    dog = Watchdog(progress, DEADLINES, exit_process=exits.append)
    for _ in range(100):
        progress.batch_start()
        clock.now += 1.0
        dog.check()
        progress.batch_end()
        progress.commit_done()
    assert dog.reasons() == []
    assert exits == []
