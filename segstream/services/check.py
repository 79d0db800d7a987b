"""A smoke round trip through the configured Kafka and Redis, for operators and the demo."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from segstream.errors import ServiceError
from segstream.settings import Settings

__all__ = ["CdcRoundTrip", "RoundTrip", "cdc_round_trip", "round_trip"]


@dataclass(frozen=True)
class RoundTrip:
    """Milliseconds each leg of the smoke round trip took."""

    kafka_ms: float
    redis_ms: float


def round_trip(settings: Settings, timeout_s: float = 30.0) -> RoundTrip:
    """Produce one message to a scratch topic and read it back; SET and GET one Redis key.

    Raises:
        ServiceError: either server is unreachable or returned something else.
    """
    return asyncio.run(_round_trip(settings, timeout_s))


async def _round_trip(settings: Settings, timeout_s: float) -> RoundTrip:
    import redis.asyncio as aioredis
    from aiokafka import TopicPartition
    from aiokafka.errors import KafkaError

    from segstream.stream.clients.kafka import connection_problem
    from segstream.stream.clients.kafka import consumer as kafka_consumer
    from segstream.stream.clients.kafka import producer as kafka_producer
    from segstream.stream.clients.redis import connection_problem as redis_problem
    from segstream.stream.clients.redis import redis_client
    from segstream.stream.state.keys import state_prefix

    token = uuid.uuid4().hex.encode()
    topic = "segstream-smoke"
    started = time.perf_counter()
    producer = kafka_producer(settings)
    consumer = kafka_consumer(settings, auto_offset_reset="latest")
    try:
        await _ensure_topic(settings, topic)
        await producer.start()
        await consumer.start()
        # Pin the consumer to the partition's end before producing, so it sees only our token.
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_end(partition)
        await consumer.position(partition)
        started = time.perf_counter()
        await producer.send_and_wait(topic, token, key=b"smoke", partition=0)
        async with asyncio.timeout(timeout_s):
            while True:
                record = await consumer.getone()
                if record.value == token:
                    break
    except (KafkaError, OSError, TimeoutError) as exc:
        problem = await connection_problem(settings)
        raise ServiceError(
            problem or f"Kafka round trip via {settings.kafka_bootstrap_servers} failed: {exc!r}"
        ) from exc
    finally:
        await consumer.stop()
        await producer.stop()
    kafka_ms = (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    client = redis_client(settings)
    # A hash under the app's prefix, written, read and unlinked: commands and keys that the
    # worker's ACL (segstream.stream.state.acl) allows, so the check works as that user too.
    key = f"{state_prefix(settings)}smoke"
    try:
        await client.hset(key, "token", token)
        if await client.hget(key, "token") != token:
            raise ServiceError(f"Redis at {settings.redis_display} returned another value")
        await client.unlink(key)
    except aioredis.RedisError as exc:
        problem = redis_problem(settings, exc)
        raise ServiceError(
            problem or f"Redis round trip via {settings.redis_display} failed: {exc}"
        ) from exc
    finally:
        await client.aclose()
    return RoundTrip(kafka_ms=kafka_ms, redis_ms=(time.perf_counter() - started) * 1000)


async def _ensure_topic(settings: Settings, topic: str) -> None:
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    from segstream.stream.clients.kafka import admin_client

    admin = admin_client(settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


@dataclass(frozen=True)
class CdcRoundTrip:
    """Milliseconds a query to PostgreSQL and a request to Kafka Connect's REST API took."""

    postgres_ms: float
    connect_ms: float


def cdc_round_trip(database_url: str, connect_url: str) -> CdcRoundTrip:
    """Run ``SELECT 1`` on the database and list Connect's connectors.

    Raises:
        ServiceError: either does not answer.
    """
    import json
    import urllib.error
    import urllib.request

    import psycopg

    started = time.perf_counter()
    _, _, rest = database_url.partition("://")
    try:
        with psycopg.connect(f"postgresql://{rest}", connect_timeout=5) as conn:
            conn.execute("SELECT 1").fetchone()
    except psycopg.Error as exc:
        raise ServiceError(f"PostgreSQL did not answer: {exc}") from exc
    postgres_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(f"{connect_url}/connectors", timeout=10) as reply:
            json.loads(reply.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ServiceError(f"Kafka Connect at {connect_url} did not answer: {exc}") from exc
    return CdcRoundTrip(postgres_ms, (time.perf_counter() - started) * 1000)
