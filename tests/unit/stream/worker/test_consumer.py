"""The lean consumer's fast-path test and its guard against Faust changing what it overrides."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from faust.transport.consumer import Consumer as FaustConsumer

from segstream.settings import Settings
from segstream.stream.worker.app import base_app
from segstream.stream.worker.consumer import (
    LeanConsumer,
    LeanConsumerThread,
    any_full,
    use_lean_consumer,
)


def test_any_full_is_true_only_when_a_put_would_wait() -> None:
    roomy: asyncio.Queue[int] = asyncio.Queue(maxsize=2)
    full: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    full.put_nowait(1)
    roomy.put_nowait(1)
    assert not any_full([roomy])
    assert any_full([roomy, full])
    assert not any_full([])


def test_the_overridden_faust_methods_keep_their_signatures() -> None:
    # LeanConsumer re-implements Faust's fetch loop and wraps its commit: if Faust renames or
    # re-signs them, the override would silently stop being called.
    assert list(inspect.signature(FaustConsumer._drain_messages).parameters) == [
        "self",
        "fetcher",
    ]
    assert list(inspect.signature(FaustConsumer.commit).parameters) == [
        "self",
        "topics",
        "start_new_transaction",
    ]
    assert LeanConsumer._drain_messages is not FaustConsumer._drain_messages


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
