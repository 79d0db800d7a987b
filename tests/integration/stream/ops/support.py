"""Helpers of the ops tests: an HTTP client, an HTTP app served from a thread, a stand-in
worker, and readers of the Prometheus exposition.

The stand-in worker is what phase 1 has instead of the Faust worker: a plain aiokafka consumer
in the worker's group (manually assigned, so no rebalance wait) handing each batch to the
worker's own :class:`~segstream.stream.worker.processor.BatchProcessor` (real Redis, Lua, model,
producer), then committing. Redis state, ``segment-changes`` and ``user-segments`` are then
exactly what the worker writes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from segstream.settings import Settings
from segstream.stream.domain.topics import Topics
from segstream.stream.http.server import create_web_app, start_web
from segstream.stream.kafka.publisher import AiokafkaSender
from segstream.stream.kafka.topics import partitions_of
from segstream.stream.lifecycle.replay import ReplayEvent, publish_events
from segstream.stream.state.keys import state_prefix
from segstream.stream.state.store import RedisState
from segstream.stream.worker.assigner import Assigner
from segstream.stream.worker.processor import BatchProcessor
from tests.waiting import wait_until


def publish(settings: Settings, events: list[ReplayEvent]) -> None:
    """Publish replay events to the settings' input topics."""
    topics = {"users": settings.topic_users, "orders": settings.topic_orders}
    asyncio.run(publish_events(events, settings=settings, topics=topics))


async def _stand_in(settings: Settings, expected: int, timeout_s: float) -> int:
    bootstrap = settings.kafka_bootstrap_servers
    partitions = [
        TopicPartition(topic, p)
        for topic in (settings.topic_users, settings.topic_orders)
        for p in await partitions_of(settings, topic)
    ]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=settings.app_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    client = aioredis.Redis.from_url(settings.redis_url)
    await consumer.start()
    await producer.start()
    done = 0
    try:
        consumer.assign(partitions)
        state = RedisState(client, state_prefix(settings))
        await state.load_scripts()
        processor = BatchProcessor(
            state,
            Assigner(settings.model_dir),
            AiokafkaSender(producer),
            Topics.from_settings(settings),
        )
        async with asyncio.timeout(timeout_s):
            while done < expected:
                fetched = await consumer.getmany(timeout_ms=500, max_records=500)
                records = [r for batch in fetched.values() for r in batch]
                if records:
                    await processor.process(records)
                    await consumer.commit()
                    done += len(records)
    finally:
        await consumer.stop()
        await producer.stop()
        await client.aclose()
    return done


def stand_in_worker(settings: Settings, expected: int, timeout_s: float = 60.0) -> int:
    """Process and commit ``expected`` input records as the worker group; returns the count."""
    return asyncio.run(_stand_in(settings, expected, timeout_s))


class Http:
    """A plain HTTP client of one server at ``base`` ("http://host:port"); it sends
    ``Authorization: Bearer <token>`` when given a token."""

    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base
        self.token = token

    def request(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """``(status, headers, body)`` of one request; 4xx/5xx are returned, not raised."""
        request = urllib.request.Request(self.base + path, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if self.token is not None:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """``(status, decoded JSON body)``; ``body`` is sent as JSON unless it is bytes."""
        raw = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        status, _, payload = self.request(method, path, raw)
        return status, json.loads(payload)


class ServedApp(Http):
    """``create_web_app(settings, **kwargs)`` served on its own event loop in a thread."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        token = settings.http_token.get_secret_value() if settings.http_token else None
        super().__init__(f"http://{settings.http_host}:{settings.http_port}", token)
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner = self._call(self._start(kwargs))

    def _call(self, coroutine: Any, timeout_s: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    async def _start(self, kwargs: dict[str, Any]) -> Any:
        self.app = create_web_app(self.settings, **kwargs)
        return await start_web(self.app, self.settings.http_host, self.settings.http_port)

    def stop(self) -> None:
        """Stop serving, cancel the background readers, end the thread."""
        try:
            self._call(self._runner.cleanup())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Scraped samples: (sample name, sorted label pairs) -> value."""


def scrape(server: Http) -> Samples:
    """``GET /metrics`` of ``server``, parsed with prometheus_client's own parser."""
    status, headers, body = server.request("GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def named(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called ``name``: sorted label pairs -> value."""
    return {labels: value for (n, labels), value in samples.items() if n == name}


def wait_for(probe: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Poll ``probe`` every 0.1 s until it is true; fail naming ``what`` after ``timeout_s``."""
    wait_until(probe, timeout_s, f"waiting for {what}")
