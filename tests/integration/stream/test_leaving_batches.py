"""A leave inside a batch, through the worker's batch processor on the real Kafka and Redis.

What precedes a user's leave in a batch is erased with them (never published), what follows
starts them afresh in a second round, and the whole batch redelivered publishes nothing new
and leaves the same state.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import redis
from aiokafka import AIOKafkaProducer

from segstream.settings import Settings
from segstream.stream.domain.topics import Topics
from segstream.stream.kafka.publisher import AiokafkaSender
from segstream.stream.kafka.topics import read_all
from segstream.stream.state.keys import state_key, state_prefix
from segstream.stream.state.populations import count_populations, read_populations
from segstream.stream.state.store import RedisState
from segstream.stream.worker.assigner import Assigner
from segstream.stream.worker.processor import BatchProcessor
from tests.integration.stream.conftest import Dataset, app_settings

USER = 900_001


@dataclass
class _Record:
    """An input record as the consumer hands it over (segstream's own JSON events)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple = ()
    timestamp: int = 1_765_054_800_000  # ms, as aiokafka's


def _profile(settings: Settings, offset: int, age: int) -> _Record:
    value = {"user_id": USER, "age": age, "gender": "F", "country": "Japan",
             "traffic_source": "Search", "created_at": "2024-01-01T00:00:00Z"}  # fmt: skip
    return _Record(settings.topic_users, 0, offset, str(USER).encode(), json.dumps(value).encode())


def _order(settings: Settings, offset: int, order_id: int, brand: str) -> _Record:
    item = {"product_id": 1, "brand": brand, "category": "Jeans", "sale_price": 30.0}
    value = {"order_id": order_id, "user_id": USER, "status": "Complete",
             "created_at": "2024-01-02T00:00:00Z", "items": [item]}  # fmt: skip
    return _Record(settings.topic_orders, 0, offset, str(USER).encode(), json.dumps(value).encode())


def _leave(settings: Settings, offset: int) -> _Record:
    return _Record(settings.topic_users, 0, offset, str(USER).encode(), None)


async def _process(settings: Settings, batches: list[list[_Record]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    client = redis.asyncio.Redis.from_url(settings.redis_url)
    await producer.start()
    try:
        state = RedisState(client, state_prefix(settings))
        await state.load_scripts()
        processor = BatchProcessor(
            state,
            Assigner(settings.model_dir),
            AiokafkaSender(producer),
            Topics.from_settings(settings),
        )
        for batch in batches:
            await processor.process(batch)
        prefix = state_prefix(settings)
        kept = await read_populations(client, prefix, cluster=False)
        counted = await count_populations(client, prefix, cluster=False)
        assert (kept.by_version, kept.unassigned) == (counted.by_version, counted.unassigned)
    finally:
        await producer.stop()
        await client.aclose()


def _published(settings: Settings) -> tuple[list[dict], list[bytes | None]]:
    changes = asyncio.run(read_all(settings, settings.topic_segment_changes))
    current = asyncio.run(read_all(settings, settings.topic_user_segments))
    return [json.loads(r.value) for r in changes], [r.value for r in current]


def test_a_leave_mid_batch_erases_what_came_before_and_the_rest_starts_afresh_once(
    kafka_bootstrap: str, redis_url: str, dataset: Dataset, tmp_path: Path
) -> None:
    settings = app_settings(kafka_bootstrap, redis_url, model_dir=dataset.models_dir)
    first = [_profile(settings, 0, 30), _order(settings, 0, 1, "Levi's")]
    asyncio.run(_process(settings, [first]))
    (change,), _ = _published(settings)
    assert change["sequence"] == 1

    # One batch: an order and a profile, the leave, then a new life (another age, one order).
    second = [
        _order(settings, 1, 2, "Levi's"),
        _profile(settings, 1, 31),
        _leave(settings, 2),
        _profile(settings, 3, 45),
        _order(settings, 2, 3, "Diesel"),
    ]
    asyncio.run(_process(settings, [second]))
    changes, current = _published(settings)
    assert [c["sequence"] for c in changes] == [1, 2, 1]
    leave, back = changes[1], changes[2]
    assert (leave["left"], leave["previous_segment"]) == (True, change["segment"])
    assert leave["source"] == {"topic": settings.topic_users, "partition": 0, "offset": 2}
    assert back["previous_segment"] is None
    # The new life knows only what followed the leave: the erased order 2 and age 31 are gone.
    assert back["features"]["age"] == 45
    assert back["features"]["total_orders"] == 1
    assert back["features"]["most_frequent_brand"] == "Diesel"
    assert current[-1] is not None and json.loads(current[-1])["sequence"] == 1
    stored = redis.Redis.from_url(redis_url).hgetall(state_key(state_prefix(settings), USER))
    assert stored[f"f:{settings.topic_users}:0".encode()] == b"3"
    assert stored[b"cs"] == b"1"

    # The same batch redelivered: the leave is found applied, nothing new is published.
    asyncio.run(_process(settings, [second]))
    assert _published(settings) == (changes, current)
    again = redis.Redis.from_url(redis_url).hgetall(state_key(state_prefix(settings), USER))
    assert again == stored
