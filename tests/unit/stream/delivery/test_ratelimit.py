from __future__ import annotations

from segstream.stream.delivery.ratelimit import RateLimiter


def test_slots_are_spaced_by_the_rate_and_free_after_a_pause() -> None:
    now = [100.0]
    limiter = RateLimiter(4.0, clock=lambda: now[0])
    assert [limiter.wait_s() for _ in range(3)] == [0.0, 0.25, 0.5]
    now[0] += 10.0
    assert limiter.wait_s() == 0.0
