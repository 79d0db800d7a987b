"""The lean consumer thread's fetch wait, and its guard against aiokafka or Faust changing the
private hook it uses (Faust has no setting for the wait)."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from segstream.settings import Settings
from segstream.stream.worker.app import base_app
from segstream.stream.worker.consumer import LeanConsumerThread, use_lean_consumer


def test_the_worker_consumer_long_polls_for_fetch_max_wait_ms(tmp_path: Path) -> None:
    # Faust builds its aiokafka consumer with a fixed fetch_max_wait_ms of 1,500 ms; the
    # lean consumer thread replaces it with the configured wait before the consumer starts.
    async def scenario() -> int:
        app = base_app(Settings(), tmp_path)
        use_lean_consumer(app, fetch_max_wait_ms=77)
        consumer = app.consumer
        thread = consumer._new_consumer_thread()
        assert isinstance(thread, LeanConsumerThread)
        client = thread._create_worker_consumer(consumer.transport)
        try:
            return int(client._fetch_max_wait_ms)
        finally:
            await client.stop()

    assert asyncio.run(scenario()) == 77


def test_aiokafka_still_reads_its_fetch_wait_from_the_attribute_the_thread_sets() -> None:
    # The override writes aiokafka's private attribute; the consumer passes it to its Fetcher
    # when it starts. If aiokafka renames it, the setting would silently do nothing.
    source = inspect.getsource(AIOKafkaConsumer.start)
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in source
