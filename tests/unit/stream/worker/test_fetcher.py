"""The lean fetcher's hand-over: direct while there is room, abandoned on a suspended flow."""

from __future__ import annotations

import asyncio

import faust
from mode import Service

from segstream.stream.worker.consumer import LeanConsumer, use_lean_consumer
from segstream.stream.worker.fetcher import LeanFetcher, any_full, hand_over_or_abandon


def test_any_full_is_true_only_when_a_put_would_wait() -> None:
    roomy: asyncio.Queue[int] = asyncio.Queue(maxsize=2)
    full: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    full.put_nowait(1)
    roomy.put_nowait(1)
    assert not any_full([roomy])
    assert any_full([roomy, full])
    assert not any_full([])


async def _blocked_hand_over(release: str) -> tuple[bool, list[int]]:
    """Hand 2 to a full buffer of [1], then ``release`` it by suspending or stopping."""
    consumer = Service()
    suspend_flow = asyncio.Event()
    buffer: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    buffer.put_nowait(1)
    race = asyncio.ensure_future(hand_over_or_abandon(consumer, buffer.put(2), suspend_flow))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not race.done(), "the hand-over should wait while the buffer is full"
    if release == "suspend":
        suspend_flow.set()
    else:
        await consumer.stop()
    delivered = await asyncio.wait_for(race, 5)
    buffer.get_nowait()  # room again: an abandoned put must not land now
    for _ in range(5):
        await asyncio.sleep(0)
    return delivered, [buffer.get_nowait() for _ in range(buffer.qsize())]


def test_a_hand_over_blocked_by_a_full_buffer_is_abandoned_when_the_flow_is_suspended() -> None:
    delivered, left = asyncio.run(_blocked_hand_over("suspend"))
    assert delivered is False
    assert left == []


def test_a_hand_over_blocked_by_a_full_buffer_is_abandoned_when_the_consumer_stops() -> None:
    delivered, left = asyncio.run(_blocked_hand_over("stop"))
    assert delivered is False
    assert left == []


def test_a_hand_over_that_fits_is_delivered() -> None:
    async def scenario() -> tuple[bool, list[int]]:
        buffer: asyncio.Queue[int] = asyncio.Queue(maxsize=2)
        buffer.put_nowait(1)
        delivered = await hand_over_or_abandon(Service(), buffer.put(2), asyncio.Event())
        return delivered, [buffer.get_nowait() for _ in range(buffer.qsize())]

    assert asyncio.run(scenario()) == (True, [1, 2])


def test_the_app_fetches_and_consumes_through_the_lean_classes() -> None:
    async def scenario() -> tuple[type, type]:
        app = faust.App("lean-fetcher-test", broker="kafka://127.0.0.1:1")
        use_lean_consumer(app, hold_messages=True)
        # Faust builds its fetcher as transport.Fetcher(app, ...) and its consumer as
        # transport.create_consumer(...): both must be ours.
        return app.transport.Fetcher, type(app.consumer)

    assert asyncio.run(scenario()) == (LeanFetcher, LeanConsumer)
