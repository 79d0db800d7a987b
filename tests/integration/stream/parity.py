"""The parity check: what a worker left in Redis and Kafka equals the batch pipeline's answer.

Reference: the SQL's feature rows (``read_features``) and ``segstream assign`` run on the
same data and model. Checked:

- Redis, for every user of the dataset: the features and segment of each user the SQL
  assigns, under the model's version; no segment for the others; no outbox left behind;
- ``segment-changes``: deduplicated by event_id (a re-send after a crash repeats one), each
  user's changes form one chain (each ``previous_segment`` is the segment before it, the
  first is null, and each change moves the user: a new model version alone is no change),
  the last one is the user's final segment, and exactly the SQL's users have changes; the
  payload matches the JSON Schema;
- ``user-segments``: the last record of each key is the user's final segment
  (:func:`check_user_segments`; a tombstone for users who left);
- a leave event (``segment_left``) ends a user's chain (``check_changes(..., left=...)``);
- with change data capture (``unassigns=True``), a change with segment null ends a chain too:
  the user lost a feature, so the SQL drops them; the chain must then end so for exactly
  those of its users the SQL does not assign, with a tombstone on ``user-segments``;
- the maintained population counters: the SQL's users per segment under the model's version,
  every other user with a state as unassigned, the same as counting the user hashes.
- :func:`check_sequences` (called apart): each user's ``sequence`` numbers are gap-free.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import pandas as pd

from segstream.cli.main import main as segstream_main
from segstream.settings import Settings
from segstream.stream.clients.redis import redis_client, sync_redis_client
from segstream.stream.kafka.topics import read_all
from segstream.stream.state.keys import outbox_key, state_key, state_prefix
from segstream.stream.state.populations import Populations, count_populations, read_populations
from segstream.training.features import FEATURE_COLUMNS
from tests.integration.stream.conftest import Dataset
from tests.integration.stream.schema_check import schema_check

FIELDS = ("age", "gen", "cty", "src", "n", "tb", "tc", "seg", "mv")


def batch_assign(dataset: Dataset, out: Path) -> pd.DataFrame:
    """``segstream assign`` on the dataset: user_id, segment, ..."""
    code = segstream_main(
        ["assign", "--model", str(dataset.models_dir), "--data", str(dataset.data_dir),
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    return pd.read_parquet(out)


def expected_rows(dataset: Dataset, assigned: pd.DataFrame) -> dict[int, list[str]]:
    """user_id -> the hash fields the worker must hold, as strings, for each SQL user."""
    frame = dataset.features.merge(assigned[["user_id", "segment"]], on="user_id", how="left")
    assert frame["segment"].notna().all()
    expected = {}
    for row in frame.itertuples(index=False):
        values = [getattr(row, c) for c in FEATURE_COLUMNS]
        expected[int(row.user_id)] = [
            *(str(v) for v in values),
            str(int(row.segment)),
            dataset.model.version,
        ]
    return expected


def check_parity(settings: Settings, dataset: Dataset, workdir: Path) -> dict[int, int]:
    """Assert the module docstring's checks; messages show the first few mismatches.

    Returns each assigned user's final segment (the batch's)."""
    expected = expected_rows(dataset, batch_assign(dataset, workdir / "assigned.parquet"))
    prefix = state_prefix(settings)
    client = sync_redis_client(settings)  # the settings' credentials and TLS
    try:
        pipe = client.pipeline(transaction=False)
        for uid in dataset.user_ids:
            pipe.hmget(state_key(prefix, uid), *FIELDS)
            pipe.llen(outbox_key(prefix, uid))  # 0: no outbox (LLEN is in the worker ACL)
        replies = pipe.execute()
    finally:
        client.close()
    mismatches = []
    for uid, row, outbox in zip(dataset.user_ids, replies[::2], replies[1::2], strict=True):
        got = [None if v is None else v.decode() for v in row]
        want = expected.get(uid)
        # A user the SQL does not assign must not have a segment either.
        ok = got[7] is None if want is None else got == want
        if not ok or outbox:
            mismatches.append((uid, got, want, outbox))
    assert not mismatches, f"{len(mismatches)} users differ, e.g. {mismatches[:5]}"

    final = {uid: int(want[7]) for uid, want in expected.items()}
    check_populations(settings, final, dataset.model.version)
    check_changes(settings, final, dataset.model.version)
    check_user_segments(settings, final)
    return final


def check_user_segments(
    settings: Settings,
    final: dict[int, int],
    left: frozenset[int] = frozenset(),
    *,
    unassigns: bool = False,
) -> None:
    """The last ``user-segments`` record of each user is their ``final`` segment, and a
    tombstone for exactly the users who have one and ended ``left``, or (``unassigns``:
    change data capture) who had one and are not in ``final`` (unassigned)."""
    segments = asyncio.run(read_all(settings, settings.topic_user_segments))
    last: dict[int, int | None] = {}
    for record in segments:
        last[int(record.key)] = (
            None if record.value is None else json.loads(record.value)["segment"]
        )
    gone = {uid for uid, segment in last.items() if segment is None}
    allowed = left | (gone - set(final) if unassigns else set())
    assert gone <= allowed, f"tombstones for users who did not leave: {sorted(gone - left)[:5]}"
    assert {uid: s for uid, s in last.items() if uid not in gone} == final


def check_populations(settings: Settings, final: dict[int, int], version: str) -> None:
    """The counters the scripts kept equal the batch's populations and a count of the hashes."""

    async def both() -> tuple[Populations, Populations]:
        client = redis_client(settings)
        try:
            prefix, cluster = state_prefix(settings), settings.redis_cluster
            return (
                await read_populations(client, prefix, cluster=cluster),
                await count_populations(client, prefix, cluster=cluster),
            )
        finally:
            await client.aclose()

    kept, counted = asyncio.run(both())
    per_segment: dict[int, int] = defaultdict(int)
    for segment in final.values():
        per_segment[segment] += 1
    assert kept.by_version == {version: dict(per_segment)}
    assert (kept.by_version, kept.unassigned) == (counted.by_version, counted.unassigned)


def check_changes(
    settings: Settings,
    final: dict[int, int],
    version: str,
    versions: dict[int, set[str]] | None = None,
    left: frozenset[int] = frozenset(),
    *,
    unassigns: bool = False,
) -> None:
    """The segment-change topic's chains end at ``final`` for exactly its users.

    The last change of each user names ``version``, or one of the user's own ``versions``.
    A leave event (``segment_left``) ends a life: its ``previous_segment`` is the segment
    before it and the user's next change starts from null; the users whose chain ends with
    a leave are users of ``left`` (a user who left before any change was published has none).
    With ``unassigns`` (change data capture), a change with segment null (the user lost a
    feature) ends a chain the same way, and a chain that ends so is a user ``final`` lacks.
    """
    records = asyncio.run(read_all(settings, settings.topic_segment_changes))
    check_change, check_leave = schema_check("segment_change"), schema_check("segment_left")
    chains: dict[int, list[dict]] = defaultdict(list)
    seen: dict[str, bytes] = {}
    for record in records:
        change = json.loads(record.value)
        assert int(record.key) == change["user_id"]
        if change["event_id"] in seen:
            assert seen[change["event_id"]] == record.value, (
                seen[change["event_id"]],
                record.value,
            )
            continue
        seen[change["event_id"]] = record.value
        (check_leave if change.get("left") else check_change)(change)
        chains[change["user_id"]].append(change)
    broken = []
    ended = set()
    for uid, chain in chains.items():
        previous = None
        for change in chain:
            moved = change.get("left") or change["segment"] != previous
            unassigned = not change.get("left") and change["segment"] is None
            if change["previous_segment"] != previous or not moved or unassigned > unassigns:
                broken.append((uid, [(c["previous_segment"], c.get("segment")) for c in chain]))
                break
            previous = change.get("segment")  # None after a leave or an unassign
        if chain[-1].get("left"):
            ended.add(uid)
            if uid not in left:
                broken.append((uid, "left", "did not leave"))
            continue
        if chain[-1]["segment"] is None:
            ended.add(uid)
            if uid in final:
                broken.append((uid, "unassigned", final[uid]))
            continue
        allowed = {version} if versions is None else versions.get(uid, set())
        if chain[-1]["segment"] != final.get(uid) or chain[-1]["model_version"] not in allowed:
            broken.append((uid, chain[-1]["segment"], final.get(uid)))
    assert not broken, f"{len(broken)} users' changes are wrong, e.g. {broken[:5]}"
    assert set(chains) - ended == set(final)


def check_sequences(settings: Settings, final: dict[int, int]) -> None:
    """No change event lost: each user's ``segment-changes`` records, by ``sequence``, are
    numbered 1..n without a gap, a sequence published twice is the same change, and the
    last is the user's ``final`` segment; exactly ``final``'s users have changes."""
    records = asyncio.run(read_all(settings, settings.topic_segment_changes))
    by_user: dict[int, dict[int, dict]] = defaultdict(dict)
    problems = []
    for record in records:
        change = json.loads(record.value)
        uid, number = change["user_id"], change["sequence"]
        earlier = by_user[uid].setdefault(number, change)
        if earlier["event_id"] != change["event_id"] or earlier["segment"] != change["segment"]:
            problems.append((uid, number, earlier["segment"], change["segment"]))
    for uid, changes in by_user.items():
        numbers = sorted(changes)
        if numbers != list(range(1, len(numbers) + 1)):
            problems.append((uid, numbers))
        elif changes[numbers[-1]]["segment"] != final.get(uid):
            problems.append((uid, changes[numbers[-1]]["segment"], final.get(uid)))
    assert not problems, f"{len(problems)} users' change sequences are wrong, e.g. {problems[:5]}"
    assert set(by_user) == set(final)
