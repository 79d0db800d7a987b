"""The phase clock: wall-clock seconds summed per phase, in a batch's order."""

from __future__ import annotations

from segstream.stream.worker.phases import PHASES, PhaseClock


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_phases_sum_per_name_chain_and_span_from_first_start_to_last_end() -> None:
    clock = _Clock()
    phases = PhaseClock(clock)
    assert phases.span_s == 0.0 and phases.as_dict() == {}
    since = clock()
    clock.now += 0.5
    since = phases.add("redis apply", since)
    clock.now += 0.25
    phases.add("assign", since)
    clock.now += 1.0
    phases.add("redis apply", clock.now - 1.0)

    assert phases.as_dict() == {"redis apply": 1.5, "assign": 0.25}
    assert list(phases.as_dict()) == [p for p in PHASES if p in ("redis apply", "assign")]
    assert phases.span_s == 1.75


def test_a_phase_outside_the_known_ones_is_kept_after_them() -> None:
    clock = _Clock()
    phases = PhaseClock(clock)
    phases.add("something new", clock.now - 2)
    phases.add("ack", clock.now - 1)
    assert list(phases.as_dict()) == ["ack", "something new"]
