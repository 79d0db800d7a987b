"""A worker start that fails part-way closes what it had opened: the output producer, the
HTTP side (its port is free again) and the Redis client, against the real Kafka and Redis.

Faust restarts a crashed agent, so a start that leaked would leave one more producer and one
more HTTP server (holding the port the next start needs) at every attempt.
"""

from __future__ import annotations

import asyncio

import pytest

from segstream.errors import ServiceError
from segstream.net import port_is_open
from segstream.settings import Settings
from segstream.stream.domain.topics import Topics
from segstream.stream.http.metrics import Metrics
from segstream.stream.http.server import worker_http
from segstream.stream.worker.app import WorkerParts, worker_parts
from segstream.stream.worker.watchdog import Deadlines, Progress, Watchdog
from tests.ports import free_port


async def _failing_extension(parts: WorkerParts) -> None:
    raise ServiceError("an extension failed to start")


async def _start_and_fail(settings: Settings) -> tuple[bool, set[str]]:
    """(was the HTTP side up when the failure came, tasks left pending after it)."""
    watchdog = Watchdog(Progress(), Deadlines(60, 60, 60, 30), stop=lambda reason: None)
    serving: list[bool] = []

    async def http_then_check(parts: WorkerParts):  # the real HTTP side, then a look at it
        stop = await worker_http(settings, Metrics())(parts)
        serving.append(port_is_open(settings.http_port, settings.http_host))
        return stop

    with pytest.raises(ServiceError, match="an extension failed"):
        async with worker_parts(
            settings,
            topics=Topics.from_settings(settings),
            watchdog=watchdog,
            extensions=[http_then_check, _failing_extension],
        ):
            pass
    await asyncio.sleep(0)  # let closed connections' callbacks run
    current = asyncio.current_task()
    left = {repr(t.get_coro()) for t in asyncio.all_tasks() if t is not current and not t.done()}
    return serving == [True], left


def test_a_start_that_fails_part_way_leaves_nothing_open(stream_settings: Settings) -> None:
    settings = stream_settings.model_copy(update={"http_port": free_port()})
    was_serving, left = asyncio.run(_start_and_fail(settings))
    assert was_serving, "the HTTP side never started: the test proves nothing"
    assert not port_is_open(settings.http_port, settings.http_host), "the HTTP side leaked"
    # aiokafka's producer (sender, metadata sync) and aiohttp's server run tasks until closed.
    assert left == set()
