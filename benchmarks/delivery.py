"""``segstream bench deliver``: what webhook delivery sustains, printed as figures.

On the configured Kafka and Redis (``segstream services up``), with a topic and group of its
own: ``--changes`` synthetic change events are published to a scratch ``segment-changes``
topic, and one destination loop (:class:`~segstream.stream.delivery.loop.DestinationLoop`, the
code ``segstream deliver`` runs) POSTs them to a receiver served in this process that answers
200 at once (the fast destination). Two runs:

- **throughput**: every change published first, then the loop drains the backlog: changes/s
  from the loop's start until the receiver has every one;
- **latency**: changes published at ``--rate`` per second while the loop runs: per change, the
  time from handing the record to the producer (published) to the receiver's answer
  (acknowledged); p50 and p99.

Figures depend on the machine; docs/delivery.md keeps the ones measured on the reference one.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid

from aiohttp import web
from pydantic import SecretStr

from segstream.settings import Settings
from segstream.stream.clients.kafka import producer as kafka_producer
from segstream.stream.clients.redis import redis_client
from segstream.stream.delivery.config import Destination
from segstream.stream.delivery.loop import DestinationLoop
from segstream.stream.delivery.metrics import DeliveryMetrics
from segstream.stream.domain.changes import encode_change
from segstream.stream.domain.events import Source, user_key
from segstream.stream.kafka.topics import ensure_topics

__all__ = ["run_delivery_bench"]


class _Receiver:
    def __init__(self) -> None:
        self.acked: dict[str, float] = {}

    async def handle(self, request: web.Request) -> web.Response:
        document = await request.json()
        now = time.time()
        for event in document["events"]:
            self.acked.setdefault(event["idempotency_key"], now)
        return web.Response(status=200)


def _change(user_id: int, sequence: int) -> bytes:
    return encode_change(
        user_id=user_id,
        sequence=sequence,
        previous_segment=None if sequence == 1 else 0,
        segment=sequence % 5,
        model_version="bench",
        occurred_at="2024-01-01T00:00:00Z",
        features={"total_orders": sequence},
        source=Source("bench", 0, user_id * 100 + sequence),
    )


async def _publish(settings: Settings, topic: str, n: int, rate: float | None) -> dict[str, float]:
    """Publish ``n`` changes (1,000 users, sequences in order); event id -> publish time."""
    producer = kafka_producer(settings, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    published: dict[str, float] = {}
    started = time.monotonic()
    try:
        futures = []
        for i in range(n):
            user, sequence = 1 + i % 1000, 1 + i // 1000
            value = _change(user, sequence)
            futures.append(await producer.send(topic, value, key=user_key(user)))
            published[json.loads(value)["event_id"]] = time.time()
            if rate is not None:
                ahead = (i + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return published


async def _run(settings: Settings, n: int, rate: float | None) -> tuple[float, list[float]]:
    tag = uuid.uuid4().hex[:8]
    settings = settings.model_copy(
        update={
            "app_id": f"bench-deliver-{tag}",
            "topic_segment_changes": f"bench-changes-{tag}",
            "topic_delivery_dead_letters": f"bench-delivery-dead-{tag}",
        }
    )
    await ensure_topics(
        settings,
        specs={settings.topic_segment_changes: {}, settings.topic_delivery_dead_letters: {}},
    )
    receiver = _Receiver()
    app = web.Application()
    app.router.add_post("/in", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    destination = Destination(
        name="bench",
        url=f"http://127.0.0.1:{port}/in",
        secret=SecretStr("bench-secret-0123456789"),
        batch_size=500,
        linger_ms=5,
        rate_per_s=10_000,
    )
    metrics = DeliveryMetrics(["bench"])
    producer = kafka_producer(settings, acks="all", enable_idempotence=True)
    await producer.start()
    redis = redis_client(settings)
    loop = DestinationLoop(settings, destination, metrics, producer, redis)
    stopping = asyncio.Event()
    try:
        if rate is None:
            published = await _publish(settings, settings.topic_segment_changes, n, None)
            started = time.monotonic()
            task = asyncio.create_task(loop.run(stopping))
        else:
            task = asyncio.create_task(loop.run(stopping))
            await asyncio.sleep(3)  # the consumer joins its group before the first change
            started = time.monotonic()
            published = await _publish(settings, settings.topic_segment_changes, n, rate)
        while len(receiver.acked) < n:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        stopping.set()
        await task
    finally:
        await producer.stop()
        await redis.aclose()
        await runner.cleanup()
    latencies = [receiver.acked[key] - at for key, at in published.items() if key in receiver.acked]
    return elapsed, latencies


def run_delivery_bench(settings: Settings, changes: int, rate: float) -> int:
    """Print the throughput and latency figures; returns the exit code."""
    elapsed, _ = asyncio.run(_run(settings, changes, None))
    print(
        f"throughput: {changes} changes delivered from a backlog in {elapsed:.2f} s "
        f"= {changes / elapsed:,.0f} changes/s (batch 500, one destination)"
    )
    _, latencies = asyncio.run(_run(settings, changes, rate))
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000
    print(
        f"latency at {rate:,.0f} changes/s: published -> acknowledged p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms ({len(latencies)} changes)"
    )
    return 0
