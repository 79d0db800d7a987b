"""Hot reload on the real stack: a worker switches model versions mid-stream without losing or
double-counting an event, announces only users whose segment changed, and refuses a version
that does not load while it keeps going."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from segstream.settings import Settings
from segstream.stream.lifecycle.replay import ReplayPlan
from segstream.training.artifact import ARRAYS_FILE, CURRENT_LINK
from tests.integration.stream.conftest import Dataset, replay, wait_until_consumed
from tests.integration.stream.lifecycle.checks import check_versioned_parity, last_changes
from tests.integration.stream.lifecycle.conftest import UnderLoad, Versions
from tests.integration.stream.parity import check_parity

pytestmark = pytest.mark.slow

RATE = 2_000
"""Events a second: under the worker's throughput, so it keeps up while the model switches,
and slow enough that the flow after the switch outlasts ``RELOAD_BOUND_S`` by seconds."""
RELOAD_BOUND_S = 3.0
"""The Assigner checks ``current`` every 2 s; a batch takes well under 1 s here."""


def _last_sent(plan: ReplayPlan, sent_at: list[float]) -> dict[int, float]:
    """user_id -> when that user's last event was sent."""
    last: dict[int, float] = {}
    for event, when in zip(plan.events, sent_at, strict=True):
        last[event.user_id] = when
    return last


def test_switching_versions_under_load_loses_nothing_and_later_events_use_the_new_one(
    dataset: Dataset,
    versions: Versions,
    switch_under_load: Callable[..., UnderLoad],
) -> None:
    # Every user whose events all came before the flow is on v1; 1 % of the flow sent means
    # events are flowing: the switch happens under load.
    before = int(0.4 * len(dataset.plan.events))
    run = switch_under_load(before, rate=RATE, share=0.01, first_rate=RATE)
    settings, worker, flow, switched_at = run.settings, run.worker, run.flow, run.switched_at
    flow.join()
    wait_until_consumed(settings, [worker])
    assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
    assert f"replaced by {versions.v2.version}" in worker.log_tail(400)

    models = {versions.v1.version: versions.v1, versions.v2.version: versions.v2}
    final = check_versioned_parity(settings, dataset, models, last_change_versions=set(models))
    last_sent = _last_sent(dataset.plan, [-1.0] * before + flow.sent_at)
    late = [uid for uid in final if last_sent[uid] > switched_at + RELOAD_BOUND_S]
    early = [uid for uid in final if last_sent[uid] < 0]  # all events before the switch
    assert len(late) > len(final) // 10, "too few users had events after the switch"
    assert early, "the switch came before every user's last event: nothing was tested"
    moved = [uid for uid in early if final[uid][1] != versions.v1.version]
    assert not moved, f"{len(moved)} users without events since the switch left v1: {moved[:5]}"
    stale = [uid for uid in late if final[uid][1] != versions.v2.version]
    assert not stale, f"{len(stale)} users with events after the switch kept v1: {stale[:5]}"
    # A late user whose segment v2 kept has v2 stored and no event naming v2: its last change
    # is its v1 one (the chains checked above rule out an event that does not move the user).
    named = {uid: change["model_version"] for uid, change in last_changes(settings).items()}
    kept = [uid for uid in late if named[uid] == versions.v1.version]
    moved_by_v2 = [uid for uid in late if named[uid] == versions.v2.version]
    assert kept and moved_by_v2, "v2 should keep some late users' segments and move others"


def test_a_version_that_does_not_load_is_refused_and_the_worker_keeps_going(
    stream_settings: Settings,
    dataset: Dataset,
    versions: Versions,
    models_dir: Path,
    start_worker,
    tmp_path: Path,
) -> None:
    settings = stream_settings.model_copy(update={"model_dir": models_dir})
    broken = models_dir / versions.v2.version
    arrays = broken / ARRAYS_FILE
    arrays.write_bytes(arrays.read_bytes()[:100])  # a copy cut short
    half = len(dataset.plan.events) // 2
    first = ReplayPlan(dataset.plan.events[:half], 0)
    rest = ReplayPlan(dataset.plan.events[half:], 0)

    worker = start_worker(settings)
    replay(settings, first)
    wait_until_consumed(settings, [worker])
    # By hand, as a careless deploy would: publish_current itself refuses a broken version.
    staging = models_dir / ".current.tmp"
    staging.symlink_to(broken.name, target_is_directory=True)
    os.replace(staging, models_dir / CURRENT_LINK)
    replay(settings, rest)
    wait_until_consumed(settings, [worker])
    assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()

    log = worker.log_tail(400)
    assert f"refused the new model, keeping {versions.v1.version}" in log
    assert log.count("refused the new model") == 1, "logged at every check"
    check_parity(settings, dataset, tmp_path)
