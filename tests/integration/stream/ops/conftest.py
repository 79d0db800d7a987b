"""The ops tests' world: a slice of the stream dataset processed as the worker does, served.

Each module gets its own consumer group, topics and Redis prefix. The slice is every event of
400 users with orders and of 20 users without (profile only), so the stored features of the
400 are exactly the batch SQL's and their segments the batch assignment's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from segstream.settings import Settings
from segstream.stream.http.metrics import Metrics
from segstream.stream.lifecycle.replay import ReplayEvent
from tests.integration.stream.conftest import Dataset, app_settings
from tests.integration.stream.ops.support import ServedApp, publish, stand_in_worker
from tests.ports import free_port

N_ASSIGNABLE = 400
N_PROFILE_ONLY = 20


def ops_settings(
    kafka_bootstrap: str,
    redis_url: str,
    models_dir: Path,
    *,
    create_topics: bool = True,
    **overrides: object,
) -> Settings:
    """Settings of a fresh app (group, topics, Redis prefix, HTTP port of its own).

    The topics are made here unless ``create_topics`` is false (a worker then makes them).
    """
    return app_settings(
        kafka_bootstrap,
        redis_url,
        app_prefix="ops",
        create_topics=create_topics,
        **{"model_dir": models_dir, "http_port": free_port(), **overrides},
    )


@dataclass(frozen=True)
class World:
    """What a module's app serves: who was processed, with which settings."""

    settings: Settings
    dataset: Dataset
    assignable: list[int]
    """Users whose every event was processed and who have every feature."""
    profile_only: list[int]
    """Users with a profile and no order: known, not assignable."""
    events: int


@dataclass(frozen=True)
class UserSlice:
    """Some users of the dataset and every event of theirs, in replay order."""

    assignable: list[int]
    """Users of the SQL's feature rows: once all their events are processed, the stream's
    features and segments of them are exactly the batch pipeline's."""
    profile_only: list[int]
    """Users with a profile and no order: known, not assignable."""
    events: list[ReplayEvent]


def user_slice(dataset: Dataset, assignable: int, profile_only: int) -> UserSlice:
    """The first ``assignable`` SQL users (by id) and ``profile_only`` users without orders."""
    with_features = sorted(int(u) for u in dataset.features["user_id"])
    ordering = {e.user_id for e in dataset.plan.events if e.kind == "orders"}
    without = [u for u in dataset.user_ids if u not in ordering][:profile_only]
    assert set(with_features).isdisjoint(without) and len(without) == profile_only
    chosen = set(with_features[:assignable]) | set(without)
    events = [e for e in dataset.plan.events if e.user_id in chosen]
    return UserSlice(with_features[:assignable], without, events)


@pytest.fixture(scope="module")
def world(kafka_bootstrap: str, redis_url: str, dataset: Dataset) -> World:
    settings = ops_settings(kafka_bootstrap, redis_url, dataset.models_dir)
    chosen = user_slice(dataset, N_ASSIGNABLE, N_PROFILE_ONLY)
    assignable, profile_only, events = chosen.assignable, chosen.profile_only, chosen.events
    publish(settings, events)
    assert stand_in_worker(settings, len(events)) == len(events)
    return World(settings, dataset, assignable, profile_only, len(events))


@pytest.fixture(scope="module")
def metrics() -> Metrics:
    """The metrics object the module's app exposes (the worker's, in phase 2)."""
    return Metrics()


@pytest.fixture(scope="module")
def served(world: World, metrics: Metrics) -> Iterator[ServedApp]:
    app = ServedApp(world.settings, metrics=metrics, lag_interval_s=0.3)
    try:
        yield app
    finally:
        app.stop()
