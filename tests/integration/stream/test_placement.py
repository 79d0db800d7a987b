"""Records off their key's murmur2 partition are counted and their producer pattern logged once.

A librdkafka producer (kcat, confluent-kafka) places keys by CRC32 unless configured with
``partitioner=murmur2_random``; its records for one user then land on another partition number
than Java's, aiokafka's and Faust's, and a user's events can split over two workers.
"""

from __future__ import annotations

import asyncio
import json
import signal
import zlib

from aiokafka import AIOKafkaProducer

from segstream.settings import Settings
from segstream.stream.domain.events import user_key
from segstream.stream.domain.partitioning import expected_partition
from tests.integration.stream.conftest import Dataset, app_settings, wait_until_consumed
from tests.integration.stream.ops.support import Http, named, scrape, wait_for
from tests.ports import free_port

PARTITIONS = 4


def profile(user_id: int) -> bytes:
    return json.dumps(
        {
            "user_id": user_id,
            "age": 30,
            "gender": "F",
            "country": "Brasil",
            "traffic_source": "Search",
            "created_at": "2024-05-01T10:00:00Z",
        }
    ).encode()


async def produce(settings: Settings, placed: dict[int, int]) -> None:
    """One profile per user on the partition given for it (as a CRC32 producer would)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for user_id, partition in placed.items():
            await producer.send_and_wait(
                settings.topic_users, profile(user_id), key=user_key(user_id), partition=partition
            )
    finally:
        await producer.stop()


def test_records_placed_by_crc32_are_counted_and_their_pattern_logged_once(
    kafka_bootstrap: str, redis_url: str, dataset: Dataset, start_worker
) -> None:
    settings = app_settings(
        kafka_bootstrap, redis_url, model_dir=dataset.models_dir, http_port=free_port()
    )
    crc32 = {uid: zlib.crc32(user_key(uid)) % PARTITIONS for uid in range(1, 61)}
    misplaced = {u for u, p in crc32.items() if p != expected_partition(user_key(u), PARTITIONS)}
    assert len(misplaced) >= 20  # CRC32 and murmur2 disagree on most keys
    worker = start_worker(settings)
    asyncio.run(produce(settings, crc32))
    wait_until_consumed(settings, [worker])
    http = Http(f"http://127.0.0.1:{worker.http_port}")
    counted = {(("topic", settings.topic_users),): float(len(misplaced))}
    wait_for(
        lambda: named(scrape(http), "segstream_misplaced_records_total") == counted,
        "the misplaced records counted",
    )
    assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
    log = worker.log_path.read_text(errors="replace")
    assert log.count("their placement matches CRC32") == 1, worker.log_tail()
    assert "partitioner=murmur2_random" in log
