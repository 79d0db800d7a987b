"""Bad input on the real stack: every rejected record reaches the dead-letter topic, byte for
byte, with its reason and source; every valid one around it still has its effect."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections import Counter
from typing import Any

import redis
from aiokafka import AIOKafkaProducer

from segstream.settings import Settings
from segstream.stream.domain.dead_letters import read_headers
from segstream.stream.kafka.topics import read_all
from segstream.stream.state.keys import state_key, state_prefix
from segstream.training.assign import assign
from tests.integration.stream.conftest import Dataset, wait_until_consumed

T0 = "2024-03-01T10:00:00Z"


def _profile(uid: int, **changes: Any) -> dict[str, Any]:
    doc = {"user_id": uid, "age": 30, "gender": "F", "country": "Japan",
           "traffic_source": "Search", "created_at": T0}  # fmt: skip
    doc.update(changes)
    return doc


def _order(uid: int, order_id: int, *items: tuple[str, str], **changes: Any) -> dict[str, Any]:
    lines = [
        {"product_id": 10 + i, "brand": b, "category": c, "sale_price": 25.0}
        for i, (b, c) in enumerate(items)
    ]
    doc = {"order_id": order_id, "user_id": uid, "status": "Processing", "created_at": T0,
           "items": lines}  # fmt: skip
    doc.update(changes)
    return doc


def _raw(doc: object) -> bytes:
    return json.dumps(doc).encode()


BAD_USER = 7001
VALID: list[tuple[str, int, dict[str, Any]]] = [
    ("users", 1, _profile(1, age=41)),
    ("orders", 1, _order(1, 101, ("Zoë", "Jeans"), ("Zoë", "Socks"))),
    ("orders", 1, _order(1, 102, ("Never Seen Brand", "Bags new"))),
    ("orders", 1, _order(1, 101, ("Zoë", "Jeans"), ("Zoë", "Socks"), status="Complete")),
    ("orders", 2, _order(2, 201, ("Levi's", "Jeans"))),
    ("users", 2, _profile(2, country="Atlantis", gender="M")),
    ("users", 3, _profile(3, age=22)),
    ("orders", 3, _order(3, 301, ("Nike", "Active"), ("Adidas", "Active"))),
    ("users", 3, _profile(3, age=64.0, email="a@b.c")),  # 64.0 is 64; email is ignored
]
EXPECTED = {
    1: {"age": 41, "gender": "F", "country": "Japan", "traffic_source": "Search",
        "total_orders": 2, "most_frequent_brand": "Zoë", "most_frequent_category": "Bags new"},
    2: {"age": 30, "gender": "M", "country": "Atlantis", "traffic_source": "Search",
        "total_orders": 1, "most_frequent_brand": "Levi's", "most_frequent_category": "Jeans"},
    3: {"age": 64, "gender": "F", "country": "Japan", "traffic_source": "Search",
        "total_orders": 1, "most_frequent_brand": "Adidas", "most_frequent_category": "Active"},
}  # fmt: skip
BAD: list[tuple[str, bytes, bytes, str]] = [  # topic kind, key, value, reason
    ("users", b"7001", b"not json at all", "not_json"),
    ("users", b"7001", b"[1, 2, 3]", "not_object"),
    ("users", b"7001", _raw(_profile(BAD_USER, age="31")), "wrong_type"),
    ("users", b"7001", _raw({k: v for k, v in _profile(BAD_USER).items() if k != "country"}),
     "missing_field"),
    ("users", b"7001", _raw(_profile(BAD_USER, country="x" * 65)), "too_large"),
    ("users", b"7001", _raw(_profile(BAD_USER, age=-4)), "out_of_range"),
    ("users", b"7001", _raw(_profile(BAD_USER, age=450)), "out_of_range"),
    ("users", b"7001", _raw(_profile(BAD_USER, age=30.5)), "wrong_type"),
    ("users", b"7001", _raw(_profile(BAD_USER, created_at="yesterday")), "bad_timestamp"),
    ("users", b"7002", _raw(_profile(BAD_USER)), "key_mismatch"),
    ("orders", b"7001", _raw(_order(BAD_USER, 9, ("A", "B"))).replace(b"25.0", b"NaN"),
     "not_json"),
    ("orders", b"7001", _raw(_order(BAD_USER, 9, ("A", "B"), status="Lost")), "unknown_status"),
    ("orders", b"7001", _raw(_order(BAD_USER, 9)), "empty_items"),
    ("orders", b"7001", _raw(_order(BAD_USER, 9, ("A", "B"))).replace(b"25.0", b"-5"),
     "out_of_range"),
    ("orders", b"7001", _raw(_order(BAD_USER, 9, ("A", "B"))).replace(b"25.0", b"1e9"),
     "out_of_range"),
    ("orders", b"7001", _raw(_order(BAD_USER, "9", ("A", "B"))), "wrong_type"),
    ("orders", b"7001", _raw(_order(BAD_USER, 9, ("A", "B" * 70_000))), "too_large"),
    ("orders", b"7001", _raw(_order(BAD_USER, 9, *[("A", "B")] * 101)), "too_large"),
    ("orders", b"7001", _raw(_order(BAD_USER, 9, ("A", "B"))).replace(b'"product_id": 10',
     b'"product_id": -1'), "out_of_range"),
    ("orders", b"7001", _raw(_order(BAD_USER, 9, ("b" * 201, "B"))), "too_large"),
]  # fmt: skip


async def _publish(settings: Settings) -> dict[tuple[str, int, int], tuple[bytes, bytes, str]]:
    """Valid and bad records interleaved; returns the bad ones by (topic, partition, offset)."""
    topics = {"users": settings.topic_users, "orders": settings.topic_orders}
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    bad: dict[tuple[str, int, int], tuple[bytes, bytes, str]] = {}
    try:
        for index in range(max(len(VALID), len(BAD))):
            if index < len(VALID):
                kind, uid, doc = VALID[index]
                await producer.send_and_wait(topics[kind], _raw(doc), key=str(uid).encode())
            for kind, key, value, reason in BAD[2 * index : 2 * index + 2]:
                meta = await producer.send_and_wait(topics[kind], value, key=key)
                bad[(topics[kind], meta.partition, meta.offset)] = (key, value, reason)
    finally:
        await producer.stop()
    return bad


def test_every_bad_input_is_dead_lettered_and_every_valid_one_counts(
    stream_settings: Settings, dataset: Dataset, start_worker
) -> None:
    bad = asyncio.run(_publish(stream_settings))
    assert len(bad) == len(BAD)
    worker = start_worker(stream_settings)
    wait_until_consumed(stream_settings, [worker])
    assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()

    letters = asyncio.run(read_all(stream_settings, stream_settings.topic_dead_letters))
    found = {}
    for record in letters:
        headers = read_headers(record.headers)
        source = (headers["segstream-topic"], int(headers["segstream-partition"]),
                  int(headers["segstream-offset"]))  # fmt: skip
        assert headers["segstream-detail"]
        found[source] = (record.key, record.value, headers["segstream-reason"])
    assert found == bad

    totals = re.findall(r"totals (\{.*\})", worker.log_tail(400))
    assert totals, worker.log_tail()
    counted = json.loads(totals[-1])["dead_letters"]
    assert counted == dict(Counter(reason for *_, reason in BAD))

    segments = assign(dataset.model, {c: [EXPECTED[u][c] for u in (1, 2, 3)] for c in EXPECTED[1]})
    client = redis.Redis.from_url(stream_settings.redis_url)
    prefix = state_prefix(stream_settings)
    fields = ("age", "gen", "cty", "src", "n", "tb", "tc", "seg")
    try:
        for uid, segment in zip((1, 2, 3), segments.segments.tolist(), strict=True):
            stored = [v.decode() for v in client.hmget(state_key(prefix, uid), *fields)]
            assert stored == [*map(str, EXPECTED[uid].values()), str(segment)], uid
        assert not client.exists(state_key(prefix, BAD_USER))
    finally:
        client.close()
    assert segments.unseen.tolist()[:2] == [True, True]  # unseen categories stay valid
