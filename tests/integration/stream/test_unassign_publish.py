"""An unassigning change (segment null) reaches a real broker with a ``user-segments``
tombstone, by the same path as a leave (``outbox_outputs`` then the publisher).

A user assigned segment 3, unassigned (they lost a feature: change data capture), then
assigned segment 1 again: ``segment-changes`` gets the three changes byte for byte, and the
compacted topic's values for the user are 3, a tombstone, 1.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from segstream.settings import Settings
from segstream.stream.clients.kafka import producer as kafka_producer
from segstream.stream.domain.changes import encode_change, outbox_outputs
from segstream.stream.domain.events import Source
from segstream.stream.kafka.publisher import AiokafkaSender
from segstream.stream.kafka.topics import read_all

SOURCE = Source("shop.public.order_items", 0, 12)
FEATURES = {"age": 30, "gender": "F", "country": "Japan", "traffic_source": "Search"}


def _change(sequence: int, previous: int | None, segment: int | None) -> bytes:
    return encode_change(
        user_id=7,
        sequence=sequence,
        previous_segment=previous,
        segment=segment,
        model_version="v1",
        occurred_at="2026-01-01T00:00:00Z",
        features=FEATURES | {"total_orders": 0 if segment is None else 1},
        source=SOURCE,
    )


async def _publish(
    settings: Settings, batches: list[list[bytes]], changes: str, current: str
) -> None:
    producer = kafka_producer(settings, acks="all")
    await producer.start()
    try:
        sender = AiokafkaSender(producer)
        for pending in batches:  # one worker batch each: what its settle returned
            await sender.publish(outbox_outputs({7: pending}, changes, current))
    finally:
        await producer.stop()


def test_an_unassigned_user_gets_a_tombstone_and_a_later_segment_a_value(
    make_topic: Callable[..., str], kafka_bootstrap: str
) -> None:
    changes_topic, segments_topic = make_topic(partitions=1), make_topic(partitions=1)
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap)
    first, gone, back = _change(1, None, 3), _change(2, 3, None), _change(3, None, 1)
    asyncio.run(_publish(settings, [[first], [gone], [back]], changes_topic, segments_topic))
    assert [r.value for r in asyncio.run(read_all(settings, changes_topic))] == [first, gone, back]
    values = [r.value for r in asyncio.run(read_all(settings, segments_topic))]
    assert [None if v is None else json.loads(v)["segment"] for v in values] == [3, None, 1]
    assert all(r.key == b"7" for r in asyncio.run(read_all(settings, segments_topic)))
