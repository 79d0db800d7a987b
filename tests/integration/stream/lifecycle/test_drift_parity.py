"""Parity in drift mode on the real stack: what a ``SEGSTREAM_DRIFT=river`` worker stored and
published is reproduced by ``segstream assign --with-drift --epoch E``.

One worker replays the 8,000-user dataset at a paced rate with short drift epochs, so the
shared centres move and many epochs are published while it runs. Then, for every user:

- the stored segment (Redis) is the one ``segstream assign --with-drift --epoch E`` gives
  the user on the same data, E being the user's stored ``drift_epoch`` (their last
  assignment's); 0 mismatches;
- every change event names ``model_version`` and ``drift_epoch``, and its ``segment`` is the
  assignment of its own ``features`` with that epoch's centres; the last change is the
  stored segment; ``user-segments``' last value carries the last change's epoch;
- the drift is real: segments differ from plain ``segstream assign`` (trained centres) for
  some users, and the users were assigned with several epochs;
- ``compare_with_batch`` (``segstream demo``'s check) agrees: all equal against the drifted
  reference, the drifted users different against the plain one.

The figures are written to ``test-artifacts/drift-parity.json``.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from segstream.cli.main import main as segstream_main
from segstream.settings import Settings
from segstream.stream.drift.centroids import drifted_model
from segstream.stream.drift.shared import drift_store, load_epochs
from segstream.stream.kafka.topics import read_all
from segstream.stream.lifecycle.verify import compare_with_batch
from segstream.stream.state.keys import state_key, state_prefix
from segstream.training.assign import assign
from segstream.training.features import FEATURE_COLUMNS
from tests.integration.stream.conftest import (
    REPO,
    Dataset,
    app_settings,
    replay,
    wait_until_consumed,
)
from tests.integration.stream.parity import batch_assign
from tests.integration.stream.schema_check import schema_check

pytestmark = pytest.mark.slow

EPOCH_S = 0.25
"""Short epochs, so a replay of a few seconds publishes many."""
RATE = 6_000
"""Events per second of the replay: slow enough for the run to span many epochs."""


def _use_app(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """The CLI in this process reads the app's Redis and app id, as an operator's shell would."""
    monkeypatch.setenv("SEGSTREAM_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("SEGSTREAM_APP_ID", settings.app_id)
    monkeypatch.setenv("SEGSTREAM_MODEL_DIR", str(settings.model_dir))


def _stored(settings: Settings, user_ids: list[int]) -> dict[int, tuple[int, str, int]]:
    """user -> (segment, model version, drift epoch) as the worker stored them."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for uid in user_ids:
            pipe.hmget(state_key(state_prefix(settings), uid), "seg", "mv", "de")
        rows = pipe.execute()
    finally:
        client.close()
    stored = {}
    for uid, (segment, version, epoch) in zip(user_ids, rows, strict=True):
        if segment is not None:
            assert epoch is not None, f"user {uid} has a segment but no drift epoch"
            stored[uid] = (int(segment), version.decode(), int(epoch))
    return stored


def _last_changes(settings: Settings) -> tuple[dict[int, dict], list[dict]]:
    """Each user's last change event (by sequence), and every distinct change."""
    check_change = schema_check("segment_change")
    changes: dict[str, dict] = {}
    for record in asyncio.run(read_all(settings, settings.topic_segment_changes)):
        change = json.loads(record.value)
        check_change(change)
        changes[change["event_id"]] = change
    last: dict[int, dict] = {}
    for change in changes.values():
        uid = change["user_id"]
        if uid not in last or change["sequence"] > last[uid]["sequence"]:
            last[uid] = change
    return last, list(changes.values())


def test_a_drift_worker_is_reproduced_by_assign_with_drift_at_each_users_epoch(
    kafka_bootstrap: str,
    redis_url: str,
    dataset: Dataset,
    start_worker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = app_settings(
        kafka_bootstrap,
        redis_url,
        model_dir=dataset.models_dir,
        data_dir=tmp_path / "worker-data",
        drift="river",
        drift_epoch_s=EPOCH_S,
    )
    worker = start_worker(settings)
    replay(settings, dataset.plan, rate=RATE)
    wait_until_consumed(settings, [worker])
    assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
    model = dataset.model

    # 1. Every stored segment is `assign --with-drift --epoch E` at the user's stored epoch.
    stored = _stored(settings, dataset.user_ids)
    sql_users = set(dataset.features["user_id"].tolist())
    assert set(stored) == sql_users, "exactly the SQL's users are assigned"
    epochs = sorted({epoch for _, _, epoch in stored.values()})
    _use_app(monkeypatch, settings)
    out = tmp_path / "drifted.parquet"
    argv = ["assign", "--model", str(dataset.models_dir), "--data", str(dataset.data_dir)]
    epoch_args = [arg for epoch in epochs for arg in ("--epoch", str(epoch))]
    assert segstream_main([*argv, "--out", str(out), "--with-drift", *epoch_args]) == 0
    drifted = pd.read_parquet(out)
    assert len(drifted) == len(epochs) * len(sql_users)
    reference = {
        (int(uid), int(epoch)): int(segment)
        for uid, epoch, segment in drifted[["user_id", "drift_epoch", "segment"]].itertuples(
            index=False
        )
    }
    mismatches = [
        (uid, segment, epoch, reference[(uid, epoch)])
        for uid, (segment, version, epoch) in stored.items()
        if segment != reference[(uid, epoch)] or version != model.version
    ]
    assert not mismatches, f"{len(mismatches)} users differ, e.g. {mismatches[:5]}"
    # The same comparison as `segstream demo` makes it, at each user's stored epoch.
    report = compare_with_batch(settings, drifted, model.version)
    assert report.ok and report.users == len(sql_users), report

    # 2. Every change is its own features assigned with its epoch; the last is the stored one.
    last, changes = _last_changes(settings)
    assert set(last) == sql_users
    published = {
        e.number: e for e in asyncio.run(load_epochs(settings, model, sorted(
            {c["drift_epoch"] for c in changes})))
    }  # fmt: skip
    by_epoch: dict[int, list[dict]] = defaultdict(list)
    for change in changes:
        assert change["model_version"] == model.version
        by_epoch[change["drift_epoch"]].append(change)
    wrong_changes = 0
    for number, group in by_epoch.items():
        features = pd.DataFrame([c["features"] for c in group])[list(FEATURE_COLUMNS)]
        result = assign(drifted_model(model, published[number].centers), features)
        wrong_changes += int((result.segments != [c["segment"] for c in group]).sum())
    assert wrong_changes == 0
    last_wrong = [uid for uid, change in last.items() if change["segment"] != stored[uid][0]]
    assert not last_wrong, f"last changes are not the stored segment: {last_wrong[:5]}"
    assert all(change["drift_epoch"] <= stored[uid][2] for uid, change in last.items())

    # The compacted current segment carries the epoch of the user's last change.
    current: dict[int, dict] = {}
    for record in asyncio.run(read_all(settings, settings.topic_user_segments)):
        value = json.loads(record.value)
        if value["sequence"] >= current.get(value["user_id"], {"sequence": 0})["sequence"]:
            current[value["user_id"]] = value
    assert {uid: (v["segment"], v["drift_epoch"]) for uid, v in current.items()} == {
        uid: (c["segment"], c["drift_epoch"]) for uid, c in last.items()
    }

    # 3. The drift was real, and the rule needs each user's own epoch.
    plain = batch_assign(dataset, tmp_path / "plain.parquet")
    trained = dict(zip(plain["user_id"].tolist(), plain["segment"].tolist(), strict=True))
    moved = sum(1 for uid, (segment, _, _) in stored.items() if segment != trained[uid])
    against_plain = compare_with_batch(settings, plain, model.version)
    assert (against_plain.mismatched, against_plain.other_epoch) == (moved, 0)
    newest = max(epochs)
    at_newest = sum(1 for uid, (s, _, _) in stored.items() if s != reference[(uid, newest)])
    later = [uid for uid, change in last.items() if change["drift_epoch"] != stored[uid][2]]
    # A user whose last assignment kept the segment under a newer epoch: their last change's
    # epoch with today's features is not always their segment (their stored epoch is).
    at_last_change = 0
    if later:
        rows = dataset.features.set_index("user_id").loc[later, list(FEATURE_COLUMNS)]
        for number in sorted({last[uid]["drift_epoch"] for uid in later}):
            chosen = [i for i, uid in enumerate(later) if last[uid]["drift_epoch"] == number]
            result = assign(drifted_model(model, published[number].centers), rows.iloc[chosen])
            at_last_change += int(
                (result.segments != np.array([stored[later[i]][0] for i in chosen])).sum()
            )
    figures = {
        "users": len(stored),
        "epochs_used": len(epochs),
        "newest_epoch": newest,
        "changes": len(changes),
        "mismatches_at_stored_epoch": len(mismatches),
        "changes_not_their_features_at_their_epoch": wrong_changes,
        "differ_from_plain_assign": moved,
        "differ_from_assign_at_newest_epoch": at_newest,
        "last_change_epoch_older_than_stored": len(later),
        "differ_at_last_change_epoch_with_final_features": at_last_change,
    }
    artifact = REPO / "test-artifacts" / "drift-parity.json"
    artifact.parent.mkdir(exist_ok=True)
    artifact.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
    assert moved > 0, "drift moved no user: the check above proves nothing"
    assert len(epochs) >= 3, f"users were assigned with only epochs {epochs}"


def test_assign_with_drift_without_a_drift_state_names_the_model_version_and_the_setting(
    kafka_bootstrap: str,
    redis_url: str,
    dataset: Dataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = app_settings(
        kafka_bootstrap, redis_url, model_dir=dataset.models_dir, create_topics=False
    )
    _use_app(monkeypatch, settings)
    out = tmp_path / "drifted.parquet"
    argv = ["assign", "--data", str(dataset.data_dir), "--out", str(out), "--with-drift"]
    assert segstream_main(argv) == 2
    err = capsys.readouterr().err
    assert f"no drift state for model {dataset.model.version}" in err
    assert "SEGSTREAM_DRIFT=river" in err and "SEGSTREAM_APP_ID" in err
    assert "Traceback" not in err and not out.exists()


def test_assign_with_drift_at_a_pruned_epoch_names_the_setting_to_raise(
    kafka_bootstrap: str,
    redis_url: str,
    dataset: Dataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = app_settings(
        kafka_bootstrap,
        redis_url,
        model_dir=dataset.models_dir,
        create_topics=False,
        drift_epoch_s=0.001,
        drift_epochs_kept=2,
    )
    model = dataset.model

    async def learn() -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            store = drift_store(settings, client, state_prefix(settings))
            for sequence in range(1, 5):
                await asyncio.sleep(0.002)  # past the 1 ms epoch interval: each update an epoch
                await store.update(model, np.full_like(model.centers, 0.01), 1, 1.0, "w", sequence)
        finally:
            await client.aclose()

    asyncio.run(learn())
    _use_app(monkeypatch, settings)
    out = tmp_path / "drifted.parquet"
    argv = ["assign", "--data", str(dataset.data_dir), "--out", str(out), "--with-drift"]
    assert segstream_main([*argv, "--epoch", "1"]) == 2
    err = capsys.readouterr().err
    assert f"drift epoch 1 of model {model.version} was pruned" in err
    assert "oldest kept is 3" in err and "SEGSTREAM_DRIFT_EPOCHS_KEPT" in err
    assert not out.exists()
    assert segstream_main([*argv, "--epoch", "4"]) == 0
    assert pd.read_parquet(out)["drift_epoch"].unique().tolist() == [4]
