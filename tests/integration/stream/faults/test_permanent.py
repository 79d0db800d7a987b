"""A permanent broker error stops publishing at once with its cause and the setting to change."""

from __future__ import annotations

import asyncio
import time

import pytest

from segstream.errors import ServiceError
from segstream.settings import load_settings
from segstream.stream.clients.kafka import output_producer
from segstream.stream.domain.topics import Output
from segstream.stream.kafka.publisher import AiokafkaSender


def test_a_record_larger_than_the_topic_accepts_is_not_retried_for_ever(
    kafka_bootstrap: str, make_topic
) -> None:
    topic = make_topic(partitions=1, **{"max.message.bytes": "2048"})
    settings = load_settings(kafka_bootstrap_servers=kafka_bootstrap)

    async def publish() -> None:
        producer = output_producer(settings)
        await producer.start()
        try:
            sender = AiokafkaSender(producer, first_delay_s=0.05)
            await sender.publish([Output(topic, b"42", b"x" * 50_000)])
        finally:
            await producer.stop()

    started = time.monotonic()
    with pytest.raises(ServiceError) as info:
        asyncio.run(asyncio.wait_for(publish(), 60))
    message = str(info.value)
    assert "retrying cannot help" in message
    assert "MessageSizeTooLargeError" in message
    assert "max.message.bytes" in message
    assert time.monotonic() - started < 30
