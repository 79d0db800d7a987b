"""The shared drifted centroids on the real Redis: additive atomic updates, clamping, retries,
restarts, staleness, one state per model version."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from segstream.cli.main import main as segstream_main
from segstream.errors import StateError
from segstream.stream.domain.assignment import assign_states
from segstream.stream.domain.user import UserState
from segstream.stream.drift.centroids import drift_distances, drifted_model
from segstream.stream.drift.shared import WRITER_EXPIRY_S, DriftStore, SharedDrift
from segstream.training.artifact import Model
from tests.integration.stream.conftest import Dataset
from tests.waiting import async_wait_until

PREFIX = "drift-test:"


def run(
    redis_url: str, scenario: Callable[[DriftStore], Awaitable[None]], **options: float
) -> None:
    """Run ``scenario`` with a store on a client of its own, closed afterwards.

    ``options``: the store's keyword arguments (``epoch_s``, ``epochs_kept``).
    """

    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await scenario(DriftStore(client, PREFIX, **options))  # type: ignore[arg-type]
        finally:
            await client.aclose()

    asyncio.run(main())


@pytest.fixture
def model(dataset: Dataset, redis_client: redis.Redis) -> Model:
    """The session's model, on a flushed Redis."""
    return dataset.model


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_updates_from_two_workers_all_count(model: Model, redis_url: str) -> None:
    rng = np.random.default_rng(1)
    deltas = rng.normal(0, 1e-3, (2, 50, *model.centers.shape))

    async def scenario(store: DriftStore) -> None:
        one, two = (
            SharedDrift(store, learning_rate=0.1, max_distance=10.0, writer=name)
            for name in ("one", "two")
        )

        async def push(worker: SharedDrift, moves: np.ndarray) -> None:
            for delta in moves:
                await worker.learn(model, delta, 3)

        await asyncio.gather(push(one, deltas[0]), push(two, deltas[1]))
        state = await store.read(model)
        assert state.version == 100
        assert state.learned == 300
        np.testing.assert_allclose(
            state.centers, model.centers + deltas.sum(axis=(0, 1)), rtol=0, atol=1e-12
        )
        contributions = await store.contributions(model.version)
        assert sorted((c.writer, c.points) for c in contributions) == [("one", 150), ("two", 150)]

    run(redis_url, scenario)


def test_a_centre_is_held_within_the_maximum_distance(model: Model, redis_url: str) -> None:
    delta = np.zeros_like(model.centers)
    delta[0] = [3.0, 4.0]  # 5 units away, in the direction (0.6, 0.8)
    delta[1] = [0.3, 0.0]

    async def scenario(store: DriftStore) -> None:
        state = await store.update(model, delta, 1, 0.5, "w", 1)
        distances = drift_distances(state.centers, model.centers)
        assert distances[0] == pytest.approx(0.5, abs=1e-12)
        np.testing.assert_allclose(state.centers[0] - model.centers[0], [0.3, 0.4], atol=1e-12)
        np.testing.assert_allclose(state.centers[1] - model.centers[1], [0.3, 0.0], atol=1e-12)
        assert (distances[2:] == 0).all()

    run(redis_url, scenario)


def test_a_retried_update_is_applied_once(model: Model, redis_url: str) -> None:
    delta = np.full_like(model.centers, 0.01)

    async def scenario(store: DriftStore) -> None:
        first = await store.update(model, delta, 2, 1.0, "w", 1)
        again = await store.update(model, delta, 2, 1.0, "w", 1)
        assert (first.version, again.version, again.learned) == (1, 1, 2)
        np.testing.assert_array_equal(again.centers, first.centers)

    run(redis_url, scenario)


def test_writers_silent_past_the_expiry_and_older_fields_are_removed_by_the_next_epoch(
    model: Model, redis_url: str, redis_client: redis.Redis
) -> None:
    delta = np.full_like(model.centers, 0.01)
    key = f"{PREFIX}drift:{model.version}"
    now = int(redis_client.time()[0])

    async def scenario(store: DriftStore) -> None:
        await store.update(model, delta, 2, 1.0, "w", 1)
        redis_client.hset(
            key,
            mapping={
                "w:gone": f"9 40 {now - WRITER_EXPIRY_S - 2}",  # silent for a day
                "w:recent": f"3 5 {now - 60}",
                "s:old": "12",  # the script before: no time, removed
                "p:old": "30",
            },
        )
        state = await store.update(model, delta, 3, 1.0, "w", 2)
        assert (state.version, state.learned, state.epoch.number) == (2, 5, 2)
        fields = set(redis_client.hkeys(key))
        assert fields == {
            b"v", b"c", b"t", b"n", b"ua", b"w:w", b"w:recent", b"e", b"ea", b"e:1", b"e:2",
        }  # fmt: skip
        contributions = await store.contributions(model.version)
        assert [(c.writer, c.points) for c in contributions] == [("recent", 5), ("w", 5)]
        # Hundreds of restarts (a new writer each), each silent since: the hash stays small.
        for restart in range(300):
            redis_client.hset(key, f"w:r{restart}", f"1 1 {now - WRITER_EXPIRY_S - 2}")
        await store.update(model, delta, 1, 1.0, "w", 3)
        assert redis_client.hlen(key) == 12  # the 11 above and epoch 3

    run(redis_url, scenario, epoch_s=0.0)  # every update publishes an epoch, so sweeps


def test_a_state_started_from_other_trained_centres_is_refused(
    model: Model, redis_url: str
) -> None:
    other = dataclasses.replace(model, centers=model.centers + 1.0)

    async def scenario(store: DriftStore) -> None:
        await store.update(model, np.zeros_like(model.centers), 1, 1.0, "w", 1)
        with pytest.raises(StateError, match="other trained centres"):
            await store.update(other, np.zeros_like(model.centers), 1, 1.0, "w", 2)

    run(redis_url, scenario)


def test_a_restarted_worker_continues_from_the_drifted_centres(
    model: Model, redis_url: str
) -> None:
    delta = np.full_like(model.centers, 0.05)

    async def before_restart(store: DriftStore) -> None:
        await SharedDrift(store, learning_rate=0.1, max_distance=1.0).learn(model, delta, 4)

    async def after_restart(store: DriftStore) -> None:
        state = await SharedDrift(store, learning_rate=0.1, max_distance=1.0).centroids(model)
        assert (state.version, state.learned) == (1, 4)
        np.testing.assert_allclose(state.centers, model.centers + delta, atol=1e-12)

    run(redis_url, before_restart)
    run(redis_url, after_restart)


def test_centres_are_never_older_than_the_staleness_bound(model: Model, redis_url: str) -> None:
    clock = Clock()
    delta = np.full_like(model.centers, 0.02)

    async def scenario(store: DriftStore) -> None:
        reader = SharedDrift(
            store, learning_rate=0.1, max_distance=1.0, max_staleness_s=1.0, clock=clock
        )
        other = SharedDrift(store, learning_rate=0.1, max_distance=1.0)
        assert (await reader.centroids(model)).version == 0
        await other.learn(model, delta, 1)
        clock.now += 0.9
        assert (await reader.centroids(model)).version == 0, "read again too early"
        clock.now += 0.2
        seen = await reader.centroids(model)
        assert seen.version == 1
        np.testing.assert_allclose(seen.centers, model.centers + delta, atol=1e-12)

    run(redis_url, scenario)


def test_a_new_model_version_starts_from_its_own_trained_centres(
    model: Model, redis_url: str
) -> None:
    newer = dataclasses.replace(model, version=model.version + "-next")

    async def scenario(store: DriftStore) -> None:
        drift = SharedDrift(store, learning_rate=0.1, max_distance=1.0)
        await drift.learn(model, np.full_like(model.centers, 0.1), 1)
        fresh = await drift.centroids(newer)
        assert (fresh.model_version, fresh.version) == (newer.version, 0)
        np.testing.assert_array_equal(fresh.centers, newer.centers)
        assert (await store.read(model)).version == 1, "the old version's state is kept"

    run(redis_url, scenario)


def _states(dataset: Dataset, applied: list[int]) -> list[UserState]:
    rows = dataset.features.head(len(applied)).to_dict("records")
    return [
        UserState(
            user_id=int(row["user_id"]),
            applied=fresh,
            age=int(row["age"]),
            gender=row["gender"],
            country=row["country"],
            traffic_source=row["traffic_source"],
            total_orders=int(row["total_orders"]),
            most_frequent_brand=row["most_frequent_brand"],
            most_frequent_category=row["most_frequent_category"],
            segment=None,
            model_version=None,
            pending=0,
        )
        for row, fresh in zip(rows, applied, strict=True)
    ]


def test_only_users_with_fresh_events_are_learned_from(
    dataset: Dataset, model: Model, redis_url: str
) -> None:
    states = _states(dataset, [1, 0, 2, 0, 0, 1])

    async def scenario(store: DriftStore) -> None:
        drift = SharedDrift(store, learning_rate=0.1, max_distance=1.0)
        segments, epoch = await drift.assign(model, states)
        assert epoch == 0 and segments.tolist() == dataset_segments(model, states)
        state = await store.read(model)
        assert (state.version, state.learned) == (1, 3)
        replayed, _ = await drift.assign(model, _states(dataset, [0] * 6))
        assert (await store.read(model)).version == 1, "redeliveries are not learned again"
        assert len(replayed) == 6

    run(redis_url, scenario)


def dataset_segments(model: Model, states: list[UserState]) -> list[int]:
    """The segments the trained centres give ``states`` (the state before any learning)."""
    return assign_states(model, states).tolist()


def test_drift_show_and_reset_report_and_forget_the_shared_state(
    dataset: Dataset,
    model: Model,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SEGSTREAM_REDIS_URL", redis_url)
    monkeypatch.setenv("SEGSTREAM_MODEL_DIR", str(dataset.models_dir))
    monkeypatch.setenv("SEGSTREAM_APP_ID", PREFIX.rstrip(":"))
    delta = np.zeros_like(model.centers)
    delta[1] = [0.3, 0.4]

    async def drift(store: DriftStore) -> None:
        await SharedDrift(store, learning_rate=0.1, max_distance=1.0, writer="w1").learn(
            model, delta, 7
        )

    run(redis_url, drift)
    assert segstream_main(["drift", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["model_version"], shown["state_version"], shown["points_learned"]) == (
        model.version,
        1,
        7,
    )
    assert [round(s["distance"], 9) for s in shown["segments"]][:2] == [0.0, 0.5]
    assert shown["writers"] == {"w1": 7}

    assert segstream_main(["drift", "reset"]) == 0
    assert "reset" in capsys.readouterr().out
    assert segstream_main(["drift", "show", "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    # Reset is one more state version and a new epoch of the trained centres; epoch 1 stays.
    assert (after["state_version"], after["points_learned"], after["writers"]) == (2, 0, {})
    assert (after["drift_epoch"], after["epochs_kept"]) == (2, [1, 2])
    assert all(s["distance"] == 0.0 for s in after["segments"])


def test_an_epoch_is_published_at_most_once_per_epoch_interval_and_never_changes(
    model: Model, redis_url: str
) -> None:
    delta = np.full_like(model.centers, 0.01)
    # Long enough that the second update lands within it even on a loaded machine; the next
    # epoch is then polled for, never slept for.
    epoch_s = 2.0

    async def scenario(store: DriftStore) -> None:
        started = time.monotonic()
        first = await store.update(model, delta, 1, 1.0, "w", 1)
        assert first.epoch.number == 1, "the first update publishes at once"
        np.testing.assert_array_equal(first.epoch.centers, first.centers)
        second = await store.update(model, delta, 1, 1.0, "w", 2)
        # Within the interval: the live centres move, the epoch the workers assign with not.
        assert (second.version, second.epoch.number) == (2, 1)
        np.testing.assert_array_equal(second.epoch.centers, first.centers)
        assert not np.array_equal(second.centers, first.centers)
        updates = [second]

        async def next_epoch() -> bool:
            updates.append(await store.update(model, delta, 1, 1.0, "w", len(updates) + 2))
            return updates[-1].epoch.number != 1

        await async_wait_until(next_epoch, 60, "no second epoch published", interval_s=0.1)
        third = updates[-1]
        assert time.monotonic() - started >= epoch_s, "an epoch came before its interval ended"
        assert third.epoch.number == 2
        np.testing.assert_array_equal(third.epoch.centers, third.centers)
        read = await store.read(model)
        assert read.epoch.number == 2
        np.testing.assert_array_equal(read.epoch.centers, third.centers)
        kept = await store.epoch(model, 1)
        np.testing.assert_array_equal(kept.centers, first.centers)
        np.testing.assert_array_equal((await store.epoch(model, 0)).centers, model.centers)
        assert (await store.epoch(model)).number == 2

    run(redis_url, scenario, epoch_s=epoch_s)


def test_a_worker_assigns_a_batch_with_one_epoch_and_says_which(
    dataset: Dataset, model: Model, redis_url: str
) -> None:
    states = _states(dataset, [1] * 200)

    async def scenario(store: DriftStore) -> None:
        drift = SharedDrift(store, learning_rate=0.5, max_distance=1.0, max_staleness_s=0.0)
        segments, epoch = await drift.assign(model, states)
        assert epoch == 0 and segments.tolist() == dataset_segments(model, states)
        for _ in range(3):  # each learns (and publishes: epoch_s=0), the next assigns with it
            segments, epoch = await drift.assign(model, states)
        published = await store.epoch(model, epoch)
        assert epoch == 3 and published.number == 3
        assert not np.array_equal(published.centers, model.centers)
        expected = assign_states(drifted_model(model, published.centers), states)
        assert segments.tolist() == expected.tolist()

    run(redis_url, scenario, epoch_s=0.0)


def test_only_the_newest_epochs_are_kept_and_an_older_one_is_refused_naming_the_setting(
    model: Model, redis_url: str, redis_client: redis.Redis
) -> None:
    delta = np.full_like(model.centers, 0.01)

    async def scenario(store: DriftStore) -> None:
        for sequence in range(1, 6):
            await store.update(model, delta, 1, 1.0, "w", sequence)
        assert await store.epochs(model.version) == [3, 4, 5]
        with pytest.raises(StateError, match=r"epoch 2 of model .* was pruned .*"
                           r"oldest kept is 3.*SEGSTREAM_DRIFT_EPOCHS_KEPT"):  # fmt: skip
            await store.epoch(model, 2)
        with pytest.raises(StateError, match=r"epoch 6 of model .* does not exist: newest is 5"):
            await store.epoch(model, 6)
        assert (await store.epoch(model, 3)).number == 3
        assert (await store.epoch(model, 0)).number == 0, "the trained centres are never pruned"

    run(redis_url, scenario, epoch_s=0.0, epochs_kept=3)
    assert redis_client.hlen(f"{PREFIX}drift:{model.version}") == 11  # 8 fields, 3 epochs


def test_no_drift_state_is_refused_naming_the_model_version_and_the_setting(
    model: Model, redis_url: str
) -> None:
    async def scenario(store: DriftStore) -> None:
        with pytest.raises(StateError) as raised:
            await store.epoch(model)
        message = str(raised.value)
        assert f"no drift state for model {model.version}" in message
        assert "SEGSTREAM_DRIFT=river" in message and "SEGSTREAM_REDIS_URL" in message

    run(redis_url, scenario)


def test_reset_publishes_the_trained_centres_as_a_new_epoch_and_keeps_the_older_ones(
    model: Model, redis_url: str
) -> None:
    delta = np.full_like(model.centers, 0.05)

    async def scenario(store: DriftStore) -> None:
        drifted = await store.update(model, delta, 3, 1.0, "w", 1)
        assert await store.reset(model.version)
        after = await store.read(model)
        assert (after.epoch.number, after.learned) == (2, 0)
        np.testing.assert_array_equal(after.epoch.centers, model.centers)
        np.testing.assert_array_equal(after.centers, model.centers)
        np.testing.assert_array_equal((await store.epoch(model, 1)).centers, drifted.centers)
        later = await store.update(model, delta, 1, 1.0, "w2", 1)
        assert later.epoch.number == 3, "no epoch number is used twice"
        assert not await store.reset(model.version + "-never")

    run(redis_url, scenario, epoch_s=0.0)
