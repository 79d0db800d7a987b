"""``segstream reassign``'s decisions: an event only when the segment changed, the version only
otherwise, pending changes read for publication, what was read carried for the compare-and-set,
keys parsed."""

from __future__ import annotations

import json

import numpy as np

from segstream.stream.domain.changes import event_id
from segstream.stream.domain.user import UserState
from segstream.stream.lifecycle.reassign import REASSIGN_SOURCE, plan_reassign, user_id_of

WHEN = "2026-02-01T10:00:00.000000Z"


def state(
    user_id: int,
    segment: int | None,
    version: str | None,
    *,
    changes: int = 0,
    pending: int = 0,
    assignable: bool = True,
    feature_version: int = 1,
) -> UserState:
    return UserState(
        user_id=user_id,
        applied=0,
        age=30,
        gender="F",
        country="Japan",
        traffic_source="Search",
        total_orders=2 if assignable else 0,
        most_frequent_brand="Zara" if assignable else None,
        most_frequent_category="Jeans" if assignable else None,
        segment=segment,
        model_version=version,
        pending=pending,
        changes=changes,
        feature_version=feature_version,
    )


def test_a_changed_segment_queues_one_change_with_the_new_version_and_next_sequence() -> None:
    plan = plan_reassign(
        [state(7, 1, "v1", changes=3, feature_version=6)], np.array([2]), "v2", WHEN
    )
    (settle,) = plan.settles
    assert (plan.changed, plan.version_only, plan.unchanged) == (1, 0, 0)
    assert (settle.seen_segment, settle.seen_model_version, settle.seen_changes) == (1, "v1", 3)
    assert settle.seen_feature_version == 6
    assert (settle.segment, settle.model_version, settle.updated_at) == (2, "v2", WHEN)
    change = json.loads(settle.change or b"")
    assert change["event_id"] == event_id(7, 4, "v2", REASSIGN_SOURCE)
    assert (change["previous_segment"], change["segment"], change["model_version"]) == (1, 2, "v2")
    assert change["occurred_at"] == WHEN
    assert change["source"] == {"topic": "segstream.reassign", "partition": 0, "offset": 0}
    assert change["features"]["most_frequent_brand"] == "Zara"


def test_the_same_segment_under_a_new_version_only_stores_the_version() -> None:
    plan = plan_reassign(
        [state(7, 1, "v1", changes=3, feature_version=6)], np.array([1]), "v2", WHEN
    )
    (settle,) = plan.settles
    assert (plan.changed, plan.version_only, plan.unchanged) == (0, 1, 0)
    assert settle.change is None and settle.writes
    assert (settle.user_id, settle.seen_segment, settle.seen_model_version) == (7, 1, "v1")
    assert (settle.seen_changes, settle.seen_feature_version) == (3, 6)
    assert (settle.segment, settle.model_version, settle.updated_at) == (1, "v2", "")


def test_a_user_already_reassigned_gets_nothing() -> None:
    plan = plan_reassign([state(7, 1, "v2", changes=4)], np.array([1]), "v2", WHEN)
    assert (plan.settles, plan.changed, plan.version_only, plan.unchanged) == ([], 0, 0, 1)


def test_pending_changes_of_an_unchanged_user_are_read_for_publication() -> None:
    plan = plan_reassign([state(7, 1, "v2", changes=4, pending=1)], np.array([1]), "v2", WHEN)
    (settle,) = plan.settles
    assert settle.change is None and settle.user_id == 7
    assert not settle.writes and plan.unchanged == 1


def test_a_first_assignment_has_no_previous_segment() -> None:
    plan = plan_reassign([state(7, None, None)], np.array([0]), "v2", WHEN)
    change = json.loads(plan.settles[0].change or b"")
    assert change["previous_segment"] is None
    assert plan.settles[0].seen_segment is None


def test_segments_pair_with_assignable_users_only() -> None:
    states = [
        state(1, None, None, assignable=False),
        state(2, 0, "v1"),
        state(3, None, None, assignable=False),
        state(4, 1, "v1"),
    ]
    plan = plan_reassign(states, np.array([0, 2]), "v2", WHEN)
    assert [(s.user_id, s.change is not None) for s in plan.settles] == [(2, False), (4, True)]


def test_user_hash_keys_give_their_ids_and_other_keys_none() -> None:
    assert user_id_of(b"app:{u:42}", "app:") == 42
    assert user_id_of(b"app:{u:42}:ob", "app:") is None
    assert user_id_of(b"app:drift:v1", "app:") is None
    assert user_id_of(b"other:{u:42}", "app:") is None
    assert user_id_of(b"app:{u:x}", "app:") is None
