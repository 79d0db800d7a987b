"""Poison inputs on the real stack: invalid UTF-8, repeated keys and a record near the broker's
1 MiB limit are each dead-lettered with their reason and headers; the worker keeps running and
applies the valid events that follow them."""

from __future__ import annotations

import asyncio
import signal

import redis
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from segstream.settings import Settings
from segstream.stream.domain.dead_letters import read_headers, record_size
from segstream.stream.kafka.topics import max_message_bytes, read_all
from segstream.stream.state.keys import state_key, state_prefix
from tests.integration.stream.conftest import Dataset, wait_until_consumed
from tests.integration.stream.test_bad_input import _profile, _raw
from tests.waiting import async_wait_until

NEAR_LIMIT = 1_048_500
"""Value bytes of the large input: under the broker's default 1 MiB (+12) batch limit only
with a raised input topic limit, and over it once a dead letter's headers are added."""


async def _raise_limit(settings: Settings, topic: str, limit: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": str(limit)})]
        )
    finally:
        await admin.close()
    seen: list[int] = []

    async def applied() -> bool:  # the broker applies a config change asynchronously
        seen.append(await max_message_bytes(settings, topic))
        return seen[-1] == limit

    await async_wait_until(applied, 10, lambda: f"{topic}'s limit is {seen[-1]}", interval_s=0.2)


async def _publish(settings: Settings, records: list[tuple[str, bytes, bytes, list]]) -> list:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        return [
            await producer.send_and_wait(topic, value, key=key, headers=headers)
            for topic, key, value, headers in records
        ]
    finally:
        await producer.stop()


def test_poison_inputs_are_dead_lettered_and_the_valid_ones_after_them_applied(
    stream_settings: Settings, dataset: Dataset, start_worker
) -> None:
    users = stream_settings.topic_users
    asyncio.run(_raise_limit(stream_settings, users, 2 * 1024 * 1024))
    dead_limit = asyncio.run(max_message_bytes(stream_settings, stream_settings.topic_dead_letters))
    assert dead_limit == 1_048_588  # Kafka's default, which the dead-letter topic keeps
    bad_utf8 = _raw(_profile(9001)).replace(b'"F"', b'"\xc3\x28"')
    repeated = _raw(_profile(9002)).replace(b'"age": 30', b'"age": 30, "age": 31')
    huge = b'{"user_id": 9003, "pad": "' + b"x" * (NEAR_LIMIT - 30) + b'"}'
    forged = [("segstream-reason", b"forged"), ("trace", b"t-1")]
    poison = [
        (users, b"9001", bad_utf8, forged, "not_utf8"),
        (users, b"9002", repeated, [], "invalid_value"),
        (users, b"9003", huge, [("trace", b"t-3")], "too_large"),
    ]
    valid = [(users, str(u).encode(), _raw(_profile(u, age=20 + u)), []) for u in (1, 2, 3)]
    # Twice: poison first, then valid events of the same partitions, so each later batch
    # runs past the poison of the first one.
    sent = asyncio.run(_publish(stream_settings, [p[:4] for p in poison] + valid))
    worker = start_worker(stream_settings)
    wait_until_consumed(stream_settings, [worker])
    more = asyncio.run(_publish(stream_settings, [p[:4] for p in poison] + valid))
    wait_until_consumed(stream_settings, [worker])
    assert worker.process.poll() is None, worker.log_tail()
    assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()

    letters = asyncio.run(read_all(stream_settings, stream_settings.topic_dead_letters))
    by_source = {}
    for letter in letters:
        headers = read_headers(letter.headers)
        key = (headers["segstream-partition"], headers["segstream-offset"])
        by_source[key] = (letter, headers)
    assert len(letters) == 2 * len(poison) == len(by_source)
    for (topic, key, value, their_headers, reason), meta in zip(
        poison * 2, sent[:3] + more[:3], strict=True
    ):
        letter, headers = by_source[(str(meta.partition), str(meta.offset))]
        assert headers["segstream-topic"] == topic
        assert headers["segstream-reason"] == reason
        assert headers["segstream-detail"]
        assert letter.key == key
        names = [name for name, _ in letter.headers]
        assert names.count("segstream-reason") == 1  # the forged one was dropped
        assert [h for h in letter.headers if h[0] == "trace"] == [
            (n, v) for n, v in their_headers if n == "trace"
        ]
        if value is huge:
            assert headers["segstream-truncated"] == "value"
            assert headers["segstream-original-size"] == str(len(huge))
            assert value.startswith(letter.value)
            assert len(value) - 2048 < len(letter.value) < len(value)
            assert record_size(letter.key, letter.value, letter.headers) <= dead_limit
            assert "truncated" in worker.log_path.read_text()
        else:
            assert letter.value == value
            assert "segstream-truncated" not in headers

    client = redis.Redis.from_url(stream_settings.redis_url)
    prefix = state_prefix(stream_settings)
    try:
        for uid in (1, 2, 3):
            assert client.hget(state_key(prefix, uid), "age") == str(20 + uid).encode()
        for uid in (9001, 9002, 9003):
            assert not client.exists(state_key(prefix, uid))
    finally:
        client.close()


def test_the_limit_of_a_topic_not_created_yet_is_the_brokers(stream_settings: Settings) -> None:
    users = stream_settings.topic_users
    asyncio.run(_raise_limit(stream_settings, users, 3_000_000))  # returns once it reads so
    missing = f"{users}-never-created"
    assert asyncio.run(max_message_bytes(stream_settings, missing)) == 1_048_588
