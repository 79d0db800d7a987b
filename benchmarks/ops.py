"""``segstream bench ops``: what the operations side costs, printed as figures.

- counting segment populations from the user hashes (``SCAN`` + a tally script per page, what
  ``segstream populations --recount`` walks) for ``--users`` synthetic users written under a
  scratch key prefix (removed afterwards); ``segstream bench populations`` compares it with the
  maintained counters that ``/segments``, ``/metrics`` and the status page read;
- reading the worker group's lag from Kafka (one :class:`~segstream.stream.kafka.lag.LagReader`
  read, clients already connected, and the one-shot ``segstream lag`` path);
- the HTTP API served in this process: ``GET /users/{id}`` and ``POST /predict`` latencies
  (sequential requests over one keep-alive connection) and ``GET /status.json``.

The synthetic users take their categorical values from the model's vocabularies, so each is
assignable and ``/users`` computes distances as it does for real users. Needs the configured
Redis and Kafka, and a model in ``SEGSTREAM_MODEL_DIR`` for the HTTP part.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import aiohttp
import numpy as np
import redis.asyncio as aioredis

from segstream.errors import ArtifactError
from segstream.settings import Settings
from segstream.stream.clients.redis import redis_client, sync_redis_client
from segstream.stream.kafka.lag import LagReader, read_lag
from segstream.stream.lifecycle.namespace import drop_keys
from segstream.stream.state.keys import state_key
from segstream.stream.state.populations import count_populations
from segstream.training.artifact import Model, load_model

__all__ = ["run_ops_bench"]


def _percentiles(samples_ms: list[float]) -> str:
    ordered = sorted(samples_ms)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, {1000 * len(ordered) / sum(ordered):,.0f} req/s"


async def _fill(client: aioredis.Redis, prefix: str, users: int, model: Model | None) -> None:
    rng = np.random.default_rng(0)
    vocab = model.vocabularies if model is not None else {}

    def pick(column: str, fallback: str) -> str:
        values = vocab.get(column) or (fallback,)
        return values[int(rng.integers(len(values)))]

    version = model.version if model is not None else "bench"
    k = model.k if model is not None else 5
    for start in range(1, users + 1, 5_000):
        pipe = client.pipeline(transaction=False)
        for uid in range(start, min(users, start + 4_999) + 1):
            pipe.hset(
                state_key(prefix, uid),
                mapping={
                    "age": int(rng.integers(18, 70)),
                    "gen": pick("gender", "F"),
                    "cty": pick("country", "Brasil"),
                    "src": pick("traffic_source", "Search"),
                    "n": int(rng.integers(1, 6)),
                    "tb": pick("most_frequent_brand", "b"),
                    "tc": pick("most_frequent_category", "c"),
                    "seg": int(rng.integers(k)),
                    "mv": version,
                    "ua": "2024-01-01T00:00:00Z",
                },
            )
        await pipe.execute()


async def _timed(n: int, call: Callable[[int], Awaitable[None]]) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        await call(i)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _bench_http(settings: Settings, prefix: str, users: int, requests: int) -> None:
    from segstream.stream.http.server import create_web_app, start_web

    with socket.socket() as probe:  # a free port: the worker or `segstream api` may hold 6066
        probe.bind((settings.http_host, 0))
        port = int(probe.getsockname()[1])
    bench_settings = settings.model_copy(update={"app_id": prefix.rstrip(":"), "http_port": port})
    app = create_web_app(bench_settings)
    runner = await start_web(app, settings.http_host, port)
    base = f"http://{settings.http_host}:{port}"
    rng = np.random.default_rng(1)
    body = {
        "age": 35,
        "gender": "F",
        "country": "Brasil",
        "traffic_source": "Search",
        "total_orders": 2,
        "most_frequent_brand": "Levi's",
        "most_frequent_category": "Jeans",
    }
    try:
        async with aiohttp.ClientSession() as session:

            async def get_user(i: int) -> None:
                uid = int(rng.integers(1, users + 1))
                async with session.get(f"{base}/users/{uid}") as response:
                    assert response.status == 200, await response.text()
                    await response.read()

            async def predict(i: int) -> None:
                async with session.post(f"{base}/predict", json={**body, "age": 20 + i % 50}) as r:
                    assert r.status == 200, await r.text()
                    await r.read()

            async def status(i: int) -> None:
                async with session.get(f"{base}/status.json") as response:
                    await response.read()

            await get_user(0)  # warm up: model, reference users, connection, first count
            await predict(0)
            await status(0)
            print(f"GET /users/{{id}}    {_percentiles(await _timed(requests, get_user))}")
            print(f"POST /predict       {_percentiles(await _timed(requests // 4, predict))}")
            print(f"GET /status.json    {_percentiles(await _timed(50, status))}")
    finally:
        await runner.cleanup()


async def _bench(settings: Settings, users: int, requests: int) -> None:
    try:
        model: Model | None = load_model(settings.model_dir)
    except ArtifactError as exc:
        model = None
        print(f"no model ({exc}): skipping the HTTP figures")
    prefix = f"bench-ops-{uuid.uuid4().hex[:8]}:"
    client = redis_client(settings)
    try:
        started = time.perf_counter()
        await _fill(client, prefix, users, model)
        print(f"wrote {users:,} synthetic user hashes in {time.perf_counter() - started:.1f} s")
        durations = []
        for _ in range(3):
            counted = await count_populations(client, prefix)
            durations.append(counted.duration_s)
        assert counted.users == users, (counted.users, users)
        best = min(durations)
        print(
            f"population SCAN count {users:,} users in {1000 * best:.0f} ms "
            f"(best of 3; {users / best:,.0f} users/s)"
        )
        if model is not None:
            await _bench_http(settings, prefix, users, requests)
    finally:
        await client.aclose()
        dropper = sync_redis_client(settings)
        try:
            drop_keys(dropper, prefix + "*")  # every primary of a cluster
        finally:
            dropper.close()
    topics = [settings.topic_users, settings.topic_orders]
    async with LagReader(settings, settings.app_id, topics) as reader:
        await reader.read()
        samples = await _timed(20, lambda i: reader.read())
    print(f"lag read (connected) {_percentiles(samples)}")
    started = time.perf_counter()
    await read_lag(settings, settings.app_id, topics)
    print(f"segstream lag path   {1000 * (time.perf_counter() - started):.0f} ms (connect + read)")


def run_ops_bench(settings: Settings, users: int, requests: int) -> int:
    """Run the figures above against the configured stack; returns the exit code."""
    asyncio.run(_bench(settings, users, requests))
    return 0
