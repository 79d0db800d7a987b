"""``segstream segment`` against the real Redis: counts, no None, JSON for an unknown user."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import redis.asyncio as aioredis

from segstream.settings import Settings
from segstream.stream.domain.events import OrderEvent, OrderItem, Source
from segstream.stream.state.keys import state_prefix
from segstream.stream.state.store import RedisState
from tests.integration.stream.conftest import REPO, app_settings, settings_env


def segment(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segstream.cli", "segment", *args],
        env=settings_env(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def store_one_order(settings: Settings, user_id: int, order_id: int) -> None:
    """The state a worker keeps for an order that came before the user's profile."""

    async def apply() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            items = (OrderItem(1, "Zara", "Jeans", 9.5),)
            order = OrderEvent(order_id, user_id, "Processing", "2024-01-02T00:00:00Z", items)
            state = RedisState(client, state_prefix(settings))
            await state.apply({user_id: [(Source(settings.topic_orders, 0, 0), order)]})
        finally:
            await client.aclose()

    asyncio.run(apply())


def test_a_user_without_a_profile_shows_a_count_and_why_it_has_no_segment(
    kafka_bootstrap: str, redis_url: str
) -> None:
    settings = app_settings(kafka_bootstrap, redis_url, create_topics=False)
    store_one_order(settings, 42, 5323)
    done = segment(settings, "42")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "  orders counted 1 (ids 5323)" in lines
    assert "None" not in done.stdout
    assert "none yet (missing age, gender, country, traffic_source)" in done.stdout
    as_json = json.loads(segment(settings, "42", "--json").stdout)
    assert as_json["orders"] == [5323] and as_json["segment"] is None


def test_an_unknown_user_exits_1_and_json_stays_json(kafka_bootstrap: str, redis_url: str) -> None:
    settings = app_settings(kafka_bootstrap, redis_url, create_topics=False)
    done = segment(settings, "999999", "--json")
    assert done.returncode == 1
    document = json.loads(done.stdout)
    assert document["user_id"] == 999999
    assert "unknown" in document["error"] and settings.app_id in document["error"]
    text = segment(settings, "999999")
    assert text.returncode == 1 and "user 999999 is unknown" in text.stdout
