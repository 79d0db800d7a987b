"""Parity when users may be under either of two model versions (hot reload, reassign).

Reference: the SQL's feature rows and :func:`segstream.training.assign.assign` under each
version. Checked for every user of the dataset: Redis holds the SQL's features (so no event
was lost or counted twice), a model version among the given ones and that version's segment
(no segment for users the SQL does not assign), and no outbox; ``segment-changes`` forms one
chain per user ending at that segment (deduplicated by event_id), each change moving the user;
the last ``user-segments`` record of each user is that segment.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Mapping

import redis

from segstream.settings import Settings
from segstream.stream.kafka.topics import read_all
from segstream.stream.state.keys import outbox_key, state_key, state_prefix
from segstream.training.artifact import Model
from segstream.training.assign import assign
from segstream.training.features import FEATURE_COLUMNS
from tests.integration.stream.conftest import Dataset
from tests.integration.stream.parity import FIELDS, check_changes


def segments_of(model: Model, dataset: Dataset) -> dict[int, int]:
    """user_id -> segment under ``model`` of every user the SQL assigns."""
    result = assign(model, dataset.features)
    return dict(zip(dataset.features["user_id"].tolist(), result.segments.tolist(), strict=True))


def stored_users(settings: Settings, user_ids: list[int]) -> dict[int, tuple[list, bool]]:
    """user_id -> (hash fields FIELDS as str or None, whether an outbox exists)."""
    prefix = state_prefix(settings)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for uid in user_ids:
            pipe.hmget(state_key(prefix, uid), *FIELDS)
            pipe.exists(outbox_key(prefix, uid))
        replies = pipe.execute()
    finally:
        client.close()
    return {
        uid: ([None if v is None else v.decode() for v in row], bool(outbox))
        for uid, row, outbox in zip(user_ids, replies[::2], replies[1::2], strict=True)
    }


def last_changes(settings: Settings) -> dict[int, dict]:
    """user_id -> the user's last segment-change event (as JSON), of every user with one."""
    records = asyncio.run(read_all(settings, settings.topic_segment_changes))
    return {int(record.key): json.loads(record.value) for record in records}


def check_versioned_parity(
    settings: Settings,
    dataset: Dataset,
    models: Mapping[str, Model],
    *,
    last_change_versions: Collection[str] | None = None,
) -> dict[int, tuple[int, str]]:
    """Assert the module docstring's checks; returns user_id -> (segment, model version).

    Args:
        models: the versions users may be stored under, by version.
        last_change_versions: the versions a user's last change may name, when not only its
            stored one: a user who kept its segment under a new version (re-assigned by a
            worker or ``segstream reassign``) has the new version stored and no event for it
            (its last change names an older version).
    """
    segments = {version: segments_of(model, dataset) for version, model in models.items()}
    features = {
        int(row.user_id): [str(getattr(row, c)) for c in FEATURE_COLUMNS]
        for row in dataset.features.itertuples(index=False)
    }
    final: dict[int, tuple[int, str]] = {}
    wrong = []
    for uid, (got, outbox) in stored_users(settings, dataset.user_ids).items():
        want = features.get(uid)
        if want is None:
            if got[7] is not None or outbox:
                wrong.append((uid, got, "no segment expected"))
            continue
        version = got[8]
        ok = (
            got[:7] == want
            and version in segments
            and got[7] == str(segments[version][uid])
            and not outbox
        )
        if not ok:
            wrong.append((uid, got, want, outbox))
            continue
        final[uid] = (int(got[7]), version)
    assert not wrong, f"{len(wrong)} users differ, e.g. {wrong[:5]}"

    check_changes(
        settings,
        {uid: seg for uid, (seg, _) in final.items()},
        "",
        versions={
            uid: {version} if last_change_versions is None else set(last_change_versions)
            for uid, (_, version) in final.items()
        },
    )
    records = asyncio.run(read_all(settings, settings.topic_user_segments))
    last = {int(r.key): json.loads(r.value)["segment"] for r in records}
    assert last == {uid: seg for uid, (seg, _) in final.items()}
    return final
