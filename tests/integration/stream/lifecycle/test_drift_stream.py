"""Drift mode on the real stack, with customers unlike the training ones (15 years older, another
category mix): the shared centroids approach the new population's true centres as events flow
(drift on, two workers sharing one state), and stay at the trained ones with drift off; a
restarted worker continues from the drifted centroids.

One scenario runs once for the module (three worker processes over the same input topics: two
in the drift app, one in the drift-off app) and records what the tests below check. The
distances are written to ``test-artifacts/drift-distances.json``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from segstream.settings import Settings, load_settings
from segstream.stream.drift.centroids import Centroids
from segstream.stream.drift.shared import MAX_STALENESS_S, Contribution, DriftStore
from segstream.stream.kafka.topics import ensure_topics
from segstream.stream.lifecycle.replay import ReplayEvent, ReplayPlan
from segstream.stream.state.keys import state_key, state_prefix
from segstream.training.artifact import Model
from segstream.training.assign import nearest
from tests.integration.stream.conftest import (
    REPO,
    Dataset,
    WorkerProcess,
    replay,
    wait_until_assigned,
    wait_until_consumed,
)
from tests.integration.stream.lifecycle.conftest import Shifted

pytestmark = pytest.mark.slow

CHECKPOINTS = (0.05, 0.2, 0.6)
"""Shares of the shifted stream after which the distances are measured; the restart follows
the last one, then the rest of the stream."""
MAX_DISTANCE = 3.0
"""Loose enough not to hold any centre back here (the lua script's clamp is tested apart)."""
PROBES = 60
"""Users re-sent after idling, to see which centres the workers assign them with."""


@dataclass
class DriftRun:
    """What the scenario measured."""

    model: Model
    shifted: Shifted
    distances_on: dict[str, float] = field(default_factory=dict)
    """Mean distance of the shared centres to the true ones, by checkpoint."""
    distances_off: dict[str, float] = field(default_factory=dict)
    """The same for the centres the drift-off app assigns with."""
    off_state_keys: list[bytes] = field(default_factory=list)
    off_segments: dict[int, int] = field(default_factory=dict)
    off_version: str = ""
    before_stop: Centroids | None = None
    at_stop: Centroids | None = None
    after_restart_read: Centroids | None = None
    final: Centroids | None = None
    writers_before_restart: list[Contribution] = field(default_factory=list)
    after_probes: Centroids | None = None
    probes_shared: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    """Probe user -> (stored segment, nearest centre of the stored drift epoch, nearest
    trained centre, stored drift epoch), two workers running."""
    probes_restarted: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    """The same after the restart."""
    logs: list[str] = field(default_factory=list)


def _settings(base: Settings, tag: str, app: str, drift: str, tmp: Path) -> Settings:
    return load_settings(
        **{
            **base.model_dump(),
            "app_id": f"{app}{tag}",
            "topic_users": f"users-{tag}",
            "topic_orders": f"orders-{tag}",
            "topic_segment_changes": f"changes-{app}{tag}",
            "topic_user_segments": f"segments-{app}{tag}",
            "topic_dead_letters": f"dead-{app}{tag}",
            "topic_partitions": 4,
            "drift": drift,
            "drift_max_distance": MAX_DISTANCE,
            "data_dir": tmp / app,
            # One process per WorkerProcess: the test counts two writers for two workers (unset,
            # `segstream worker` would run one process per core, each a writer of its own).
            "worker_processes": 1,
        }
    )


def _read(settings: Settings, model: Model) -> Centroids:
    async def read() -> Centroids:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            return await DriftStore(client, state_prefix(settings)).read(model)
        finally:
            await client.aclose()

    return asyncio.run(read())


def _writers(settings: Settings, model: Model) -> list[Contribution]:
    async def read() -> list[Contribution]:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            return await DriftStore(client, state_prefix(settings)).contributions(model.version)
        finally:
            await client.aclose()

    return asyncio.run(read())


def _mean_distance(centers: np.ndarray, true: np.ndarray) -> float:
    return float(np.linalg.norm(centers - true, axis=1).mean())


def _stored_segments(settings: Settings, user_ids: list[int]) -> dict[int, int]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for uid in user_ids:
            pipe.hget(state_key(state_prefix(settings), uid), "seg")
        return {uid: int(seg) for uid, seg in zip(user_ids, pipe.execute(), strict=True) if seg}
    finally:
        client.close()


def _margin(centers: np.ndarray, points: np.ndarray) -> np.ndarray:
    """How much nearer each point is to its nearest centre than to the second nearest."""
    distances = np.sort(nearest(centers, points)[1], axis=1)
    return distances[:, 1] - distances[:, 0]


def _pick_probes(
    run: DriftRun,
    settings: Settings,
    centroids: Centroids,
    taken: set[int],
    sent: int,
    limit: int = PROBES,
) -> dict[int, ReplayEvent]:
    """Up to ``limit`` users all of whose events are among the first ``sent`` and whose
    segment the shared centres decide (stored one and trained one both differ from theirs, by a
    clear margin): their last profile event, to send again unchanged."""
    shifted, model = run.shifted, run.model
    complete = {e.user_id for e in shifted.plan.events[:sent]} - {
        e.user_id for e in shifted.plan.events[sent:]
    }
    ids = shifted.features["user_id"].tolist()
    # Workers assign with the newest drift epoch, not with the live centres learning moves.
    assigning = centroids.epoch.centers
    shared = nearest(assigning, shifted.components)[0]
    trained = nearest(model.centers, shifted.components)[0]
    margin = _margin(assigning, shifted.components)
    stored = _stored_segments(settings, ids)
    last_profile = {e.user_id: e for e in shifted.plan.events if e.kind == "users"}
    candidates = [
        uid
        for i, uid in enumerate(ids)
        if uid not in taken
        and uid in complete
        and shared[i] != trained[i]
        and shared[i] != stored.get(uid)
        and margin[i] > 0.3
        and uid in last_profile
    ]
    return {uid: last_profile[uid] for uid in candidates[:limit]}


def _probe_results(
    run: DriftRun, settings: Settings, probes: dict[int, ReplayEvent]
) -> dict[int, tuple[int, int, int, int]]:
    """Probe user -> (stored segment, segment under the user's stored drift epoch, trained
    segment, stored drift epoch)."""
    shifted, model = run.shifted, run.model
    index = {uid: i for i, uid in enumerate(shifted.features["user_id"].tolist())}
    points = shifted.components[[index[uid] for uid in probes]]
    client = redis.Redis.from_url(settings.redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for uid in probes:
            pipe.hmget(state_key(state_prefix(settings), uid), "seg", "de")
        stored = [(int(seg), int(de or 0)) for seg, de in pipe.execute()]
    finally:
        client.close()
    epochs = {
        number: _epoch_centers(settings, model, number) for number in {de for _, de in stored}
    }
    at_epoch = [
        int(nearest(epochs[de], point[None, :])[0][0])
        for (_, de), point in zip(stored, points, strict=True)
    ]
    trained = nearest(model.centers, points)[0].tolist()
    return {
        uid: (seg, expected, int(t), de)
        for uid, (seg, de), expected, t in zip(probes, stored, at_epoch, trained, strict=True)
    }


def _epoch_centers(settings: Settings, model: Model, number: int) -> np.ndarray:
    async def read() -> np.ndarray:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            epoch = await DriftStore(client, state_prefix(settings)).epoch(model, number)
            return epoch.centers
        finally:
            await client.aclose()

    return asyncio.run(read())


def _stop(workers: list[WorkerProcess], run: DriftRun) -> None:
    for worker in workers:
        code = worker.stop(signal.SIGTERM)
        run.logs.append(worker.log_tail(400))
        assert code == 0, worker.log_tail()


@pytest.fixture(scope="module")
def drift_run(
    kafka_bootstrap: str,
    redis_url: str,
    dataset: Dataset,
    shifted: Shifted,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DriftRun]:
    tmp = tmp_path_factory.mktemp("drift")
    base = load_settings(
        kafka_bootstrap_servers=kafka_bootstrap, redis_url=redis_url, model_dir=dataset.models_dir
    )
    tag = uuid.uuid4().hex[:8]
    on = _settings(base, tag, "on", "river", tmp)
    off = _settings(base, tag, "off", "off", tmp)
    asyncio.run(ensure_topics(on))
    asyncio.run(ensure_topics(off))
    model, events = dataset.model, shifted.plan.events
    run = DriftRun(model, shifted)
    run.distances_on["start"] = run.distances_off["start"] = _mean_distance(
        model.centers, shifted.true_centers
    )
    workers: list[WorkerProcess] = []

    def start(settings: Settings) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    try:
        first, second, plain = start(on), start(on), start(off)
        wait_until_assigned([first, second])  # both in the group before the events: both work
        done = 0
        for share in CHECKPOINTS:
            upto = int(share * len(events))
            replay(on, ReplayPlan(events[done:upto], 0))
            done = upto
            wait_until_consumed(on, [first, second])
            wait_until_consumed(off, [plain])
            state = _read(on, model)
            run.distances_on[f"{share:.0%}"] = _mean_distance(state.centers, shifted.true_centers)
            off_centers = _read(off, model).centers
            run.distances_off[f"{share:.0%}"] = _mean_distance(off_centers, shifted.true_centers)

        # Two workers, one state: after idling past the staleness bound, probes sent to every
        # partition must get the shared centres' segment, whichever worker takes them.
        run.before_stop = _read(on, model)
        time.sleep(MAX_STALENESS_S + 0.5)  # the idling is the behaviour: past the bound
        # Both probe rounds draw on one pool of users the shared centres decide (70-80 in runs
        # where a first round of 60 left the second 9-22): the first round takes a little over
        # the minimum, so that the round after the restart has enough too. The pool depends on
        # how far the stored segments have followed the centres: once only 28 of 6,000 shifted
        # customers (a loaded CI run), hence 12,000 (433 in a quiet run).
        probes = _pick_probes(run, on, run.before_stop, set(), done, PROBES // 2 + 5)
        replay(on, ReplayPlan(list(probes.values()), 0))
        wait_until_consumed(on, [first, second])
        run.probes_shared = _probe_results(run, on, probes)
        run.writers_before_restart = _writers(on, model)
        run.after_probes = _read(on, model)

        _stop([first, second], run)
        run.at_stop = _read(on, model)
        restarted = start(on)
        wait_until_assigned([restarted])  # up and in its group: its start-up is behind it
        run.after_restart_read = _read(on, model)
        later = _pick_probes(run, on, run.at_stop, set(probes), done)
        replay(on, ReplayPlan(list(later.values()), 0))
        wait_until_consumed(on, [restarted])
        run.probes_restarted = _probe_results(run, on, later)

        replay(on, ReplayPlan(events[done:], 0))
        wait_until_consumed(on, [restarted])
        wait_until_consumed(off, [plain])
        run.final = _read(on, model)
        run.distances_on["100%"] = _mean_distance(run.final.centers, shifted.true_centers)
        run.distances_off["100%"] = _mean_distance(_read(off, model).centers, shifted.true_centers)
        _stop([restarted, plain], run)

        client = redis.Redis.from_url(off.redis_url)
        try:
            run.off_state_keys = list(client.scan_iter(match=f"{state_prefix(off)}drift:*"))
        finally:
            client.close()
        run.off_segments = _stored_segments(off, shifted.features["user_id"].tolist())
        run.off_version = model.version
        _write_figures(run)
        yield run
    finally:
        for worker in workers:
            worker.stop(signal.SIGKILL)


def _write_figures(run: DriftRun) -> None:
    assert run.final is not None
    figures = {
        "what": "mean distance (PCA units) of the centres to the shifted population's true "
        "centres, as the shifted stream flows",
        "drift_on": run.distances_on,
        "drift_off": run.distances_off,
        "points_learned": run.final.learned,
        "state_version": run.final.version,
        "per_segment_final": np.linalg.norm(
            run.final.centers - run.shifted.true_centers, axis=1
        ).tolist(),
    }
    out = REPO / "test-artifacts" / "drift-distances.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))


def test_with_drift_on_the_centres_approach_the_shifted_population(drift_run: DriftRun) -> None:
    d = drift_run.distances_on
    assert d["5%"] < d["start"]
    assert d["20%"] < d["5%"]
    assert d["60%"] < min(d["20%"], 0.5 * d["start"])
    assert d["100%"] < 0.5 * d["start"]


def test_with_drift_off_the_centres_stay_the_trained_ones(drift_run: DriftRun) -> None:
    assert set(drift_run.distances_off.values()) == {drift_run.distances_off["start"]}
    assert drift_run.off_state_keys == []
    shifted, model = drift_run.shifted, drift_run.model
    trained = nearest(model.centers, shifted.components)[0]
    expected = dict(zip(shifted.features["user_id"].tolist(), trained.tolist(), strict=True))
    assert drift_run.off_segments == expected


def test_two_workers_learn_into_and_assign_with_one_shared_state(drift_run: DriftRun) -> None:
    writers = drift_run.writers_before_restart
    assert len(writers) == 2 and all(w.points > 0 for w in writers), writers
    assert drift_run.after_probes is not None
    assert sum(w.points for w in writers) == drift_run.after_probes.learned
    probes = drift_run.probes_shared
    assert len(probes) >= PROBES // 2, "too few users to probe with"
    # Assigned with the newest epoch when the probes were sent (or a newer one), and that
    # epoch's centres decide the segment, not the trained ones.
    assert drift_run.before_stop is not None
    newest = drift_run.before_stop.epoch.number
    assert newest > 0
    wrong = {uid: r for uid, r in probes.items() if r[0] != r[1] or r[3] < newest}
    assert not wrong, f"(stored, at its epoch, trained, epoch) differ (newest {newest}): {wrong}"
    logs = drift_run.logs[:2]
    assert all("input partitions assigned: users [" in log for log in logs)


def test_a_restarted_worker_continues_from_the_drifted_centres(drift_run: DriftRun) -> None:
    at_stop, read, final = drift_run.at_stop, drift_run.after_restart_read, drift_run.final
    assert at_stop is not None and read is not None and final is not None
    assert (read.version, read.learned) == (at_stop.version, at_stop.learned)
    np.testing.assert_array_equal(read.centers, at_stop.centers)
    assert at_stop.version > 0
    assert final.version > at_stop.version and final.learned > at_stop.learned
    probes = drift_run.probes_restarted
    assert len(probes) >= PROBES // 2, "too few users to probe with"
    newest = at_stop.epoch.number
    assert newest > 0
    wrong = {uid: r for uid, r in probes.items() if r[0] != r[1] or r[3] < newest}
    assert not wrong, f"(stored, at its epoch, trained, epoch) differ (newest {newest}): {wrong}"
