"""The record of Redis primaries written degraded (short of replicas): pure, no server."""

from __future__ import annotations

import logging

import pytest

from segstream.stream.state.replicas import ReplicaShortfall, online_replicas


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Observer:
    def __init__(self) -> None:
        self.changes: list[tuple[str, bool]] = []

    def redis_degraded(self, primary: str, degraded: bool) -> None:
        self.changes.append((primary, degraded))


def _shortfall(required: int = 1) -> tuple[ReplicaShortfall, _Observer, _Clock]:
    observer, clock = _Observer(), _Clock()
    shortfall = ReplicaShortfall(required, observer=observer, recheck_s=5.0, clock=clock)  # type: ignore[arg-type]
    return shortfall, observer, clock


class TestReplicaShortfall:
    def test_a_primary_with_its_replicas_is_waited_for_in_full(self) -> None:
        shortfall, observer, _ = _shortfall(2)
        assert shortfall.record("a:1", 2) is False
        assert shortfall.replicas_to_wait_for("a:1") == 2
        assert shortfall.reasons() == [] and observer.changes == []

    def test_a_primary_short_of_replicas_is_waited_for_with_what_it_has(self) -> None:
        shortfall, _, _ = _shortfall(2)
        assert shortfall.record("a:1", 1) is True
        assert shortfall.replicas_to_wait_for("a:1") == 1
        assert shortfall.replicas_to_wait_for("b:2") == 2
        shortfall.record("c:3", 0)
        assert shortfall.replicas_to_wait_for("c:3") == 0

    def test_each_change_is_logged_and_observed_once(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        shortfall, observer, _ = _shortfall()
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                shortfall.record("a:1", 0)
            shortfall.record("a:1", 1)
            shortfall.record("a:1", 1)
        assert observer.changes == [("a:1", True), ("a:1", False)]
        messages = [r.getMessage() for r in caplog.records if r.name.startswith("segstream.")]
        assert len(messages) == 2
        assert "a:1 has 0 replica(s)" in messages[0]
        assert "SEGSTREAM_REDIS_MIN_REPLICAS=1" in messages[0]
        assert "again" in messages[1]

    def test_readiness_names_the_primary_and_the_setting(self) -> None:
        shortfall, _, _ = _shortfall()
        shortfall.record("b:2", 0)
        (reason,) = shortfall.reasons()
        assert "Redis primary b:2 has 0 of the 1 replica(s)" in reason
        assert "SEGSTREAM_REDIS_MIN_REPLICAS" in reason

    def test_a_degraded_primary_is_due_for_a_recount_after_the_interval(self) -> None:
        shortfall, _, clock = _shortfall()
        shortfall.record("a:1", 0)
        assert shortfall.due() == []
        clock.now += 5.0
        assert shortfall.due() == ["a:1"]
        shortfall.record("a:1", 0)
        assert shortfall.due() == []

    def test_a_short_wait_stands_when_every_replica_a_degraded_primary_has_acked(self) -> None:
        shortfall, _, _ = _shortfall(2)
        assert shortfall.accepts("a:1", acked=1, connected=1)
        assert shortfall.accepts("b:2", acked=0, connected=0), "no replica: nothing to wait for"
        assert shortfall.degraded() == {"a:1": 1, "b:2": 0}

    def test_a_short_wait_is_retried_when_a_replica_the_primary_has_is_late(self) -> None:
        shortfall, _, _ = _shortfall(2)
        assert not shortfall.accepts("a:1", acked=0, connected=1), "degraded, one late"
        assert not shortfall.accepts("b:2", acked=1, connected=2), "not degraded: one late"
        assert shortfall.degraded() == {"a:1": 1}

    def test_a_node_that_is_no_longer_a_primary_is_forgotten(self) -> None:
        shortfall, observer, _ = _shortfall()
        shortfall.record("a:1", 0)
        shortfall.record("b:2", 0)
        shortfall.keep_only(["b:2", "c:3"])
        assert shortfall.degraded() == {"b:2": 0}
        assert observer.changes[-1] == ("a:1", False)


def test_only_replicas_in_sync_are_counted() -> None:
    """A replica still loading its first copy cannot acknowledge a WAIT yet."""
    info = {
        "role": "master",
        "connected_slaves": 2,
        "slave0": {"ip": "127.0.0.1", "port": 7001, "state": "online", "offset": 10, "lag": 0},
        "slave1": {"ip": "127.0.0.1", "port": 7002, "state": "wait_bgsave", "offset": 0},
        "master_repl_offset": 10,
    }
    assert online_replicas(info) == 1
    assert online_replicas({"role": "master", "connected_slaves": 0}) == 0
