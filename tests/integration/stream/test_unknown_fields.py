"""Fields no event has, on the real stack: ignored, counted and logged once by default;
dead letters naming the field with ``SEGSTREAM_UNKNOWN_FIELDS=dead_letter``."""

from __future__ import annotations

import asyncio
import signal

import redis
from aiokafka import AIOKafkaProducer

from segstream.settings import Settings
from segstream.stream.domain.dead_letters import read_headers
from segstream.stream.kafka.topics import read_all
from segstream.stream.state.keys import state_key, state_prefix
from tests.integration.stream.conftest import Dataset, wait_until_consumed
from tests.integration.stream.ops.support import Http, named, scrape
from tests.integration.stream.test_bad_input import _order, _profile, _raw
from tests.ports import free_port

USER = 8001
RECORDS = [  # topic kind, value: a producer that added fields to both kinds of event
    ("users", _raw(_profile(USER, age=37, email="a@b.c"))),
    ("users", _raw(_profile(USER, age=38, email="a@b.c", loyalty={"tier": "gold"}))),
    ("orders", _raw(_order(USER, 801, ("Levi's", "Jeans"), coupon=None))),
]
COLOURED = _order(USER, 802, ("Levi's", "Jeans"))
COLOURED["items"][0]["colour"] = "blue"
RECORDS.append(("orders", _raw(COLOURED)))


async def _publish(settings: Settings) -> None:
    topics = {"users": settings.topic_users, "orders": settings.topic_orders}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for kind, value in RECORDS:
            await producer.send_and_wait(topics[kind], value, key=str(USER).encode())
    finally:
        await producer.stop()


def _run(settings: Settings, dataset: Dataset, start_worker) -> tuple[object, dict, str]:
    """Publish :data:`RECORDS`, run a worker over them; its unknown-field counts, the user's
    stored fields, and its log."""
    settings = settings.model_copy(update={"http_port": free_port()})
    asyncio.run(_publish(settings))
    worker = start_worker(settings)
    wait_until_consumed(settings, [worker])
    http = Http(f"http://127.0.0.1:{worker.http_port}")
    counts = named(scrape(http), "segstream_unknown_fields_total")
    assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        stored = client.hgetall(state_key(state_prefix(settings), USER))
    finally:
        client.close()
    return counts, stored, worker.log_path.read_text(errors="replace")


def test_unknown_fields_are_ignored_counted_and_logged_once_by_default(
    stream_settings: Settings, dataset: Dataset, start_worker
) -> None:
    assert stream_settings.unknown_fields == "ignore"
    counts, stored, log = _run(stream_settings, dataset, start_worker)
    assert counts == {
        (("topic", stream_settings.topic_users),): 2.0,
        (("topic", stream_settings.topic_orders),): 2.0,
    }
    assert (stored["age"], stored["n"], stored["tb"]) == ("38", "2", "Levi's")
    assert "seg" in stored  # the user was assigned, with the fields ignored
    for name in ("email", "loyalty", "coupon", "items[].colour"):
        assert log.count(f"carry the field {name!r}") == 1, log
    letters = asyncio.run(read_all(stream_settings, stream_settings.topic_dead_letters))
    assert letters == []


def test_unknown_fields_are_dead_letters_naming_the_field_when_set(
    stream_settings: Settings, dataset: Dataset, start_worker
) -> None:
    settings = stream_settings.model_copy(update={"unknown_fields": "dead_letter"})
    counts, stored, _ = _run(settings, dataset, start_worker)
    assert counts == {}
    assert stored == {}  # every event of the user carried an unknown field
    letters = asyncio.run(read_all(settings, settings.topic_dead_letters))
    found = []
    for record in letters:
        headers = read_headers(record.headers)
        found.append((record.value, headers["segstream-reason"], headers["segstream-detail"]))
    # Each record is a dead letter, byte for byte; the detail names its first unknown field.
    assert sorted(
        (value, reason, detail.split("'")[1]) for value, reason, detail in found
    ) == sorted(
        (value, "unexpected_field", first)
        for (_, value), first in zip(
            RECORDS, ("email", "email", "coupon", "items[].colour"), strict=True
        )
    )
