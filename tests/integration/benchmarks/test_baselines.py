"""The local-state baseline on a real broker: every record counted, sent and committed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.baselines import LocalCounters, run_aiokafka_loop
from segstream.settings import Settings
from tests.waiting import async_wait_until


def _order(user_id: int, prices: list[float]) -> bytes:
    items = [{"product_id": 1, "brand": "b", "category": "c", "sale_price": p} for p in prices]
    return msgspec.json.encode({"order_id": 1, "user_id": user_id, "items": items})


async def _scenario(settings: Settings, sink: str) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_users, b'{"user_id": 10}', key=b"10")
        for key, prices in ((b"7", [2.5, 1.5]), (b"8", [10.0]), (b"7", [1.0])):
            await producer.send_and_wait(settings.topic_orders, _order(int(key), prices), key=key)
        await producer.send_and_wait(settings.topic_orders, b"{not json", key=b"9")
    finally:
        await producer.stop()

    counters = LocalCounters()
    stop = asyncio.Event()
    loop = asyncio.create_task(
        run_aiokafka_loop(settings, sink, local_state=True, stop=stop, counters=counters)
    )
    reader = AIOKafkaConsumer(sink, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await reader.start()
    sent: list[tuple[bytes, bytes]] = []
    try:

        async def four_sent() -> bool:
            assert not loop.done(), loop  # a loop that died fails here, not at the deadline
            for records in (await reader.getmany(timeout_ms=200)).values():
                sent.extend((r.key, r.value) for r in records)
            return len(sent) >= 4

        await async_wait_until(four_sent, 120, lambda: f"the sink has {sent}")
        admin = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=settings.app_id)
        await admin.start()
        try:
            inputs = [
                TopicPartition(settings.topic_users, 0),
                TopicPartition(settings.topic_orders, 0),
            ]

            async def all_committed() -> bool:
                offsets = [await admin.committed(tp) for tp in inputs]
                return offsets == [1, 4]

            await async_wait_until(all_committed, 60, "the loop did not commit every record")
        finally:
            await admin.stop()
    finally:
        stop.set()
        await asyncio.wait_for(loop, 60)
        await reader.stop()

    by_user: dict[bytes, list[bytes]] = {}
    for key, value in sent:
        by_user.setdefault(key, []).append(value)
    # One user's records are one partition's, so its counters are sent in its order.
    assert by_user == {
        b"7": [b"[0,1,2,4.0]", b"[0,2,3,5.0]"],
        b"8": [b"[0,1,1,10.0]"],
        b"10": [b"[1,0,0,0.0]"],
    }
    assert len(sent) == 4 and counters.rejected == 1
    assert counters.users == {b"7": [0, 2, 3, 5.0], b"8": [0, 1, 1, 10.0], b"10": [1, 0, 0, 0.0]}


def test_the_local_state_loop_counts_sends_and_commits_every_record(
    stack_settings: Settings, kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    settings = stack_settings.model_copy(
        update={
            "topic_users": make_topic(partitions=1),
            "topic_orders": make_topic(partitions=1),
            "app_id": "local-state-baseline",
        }
    )
    asyncio.run(_scenario(settings, make_topic(partitions=1)))
