"""Operating on a running stream: replaying datasets, re-assigning after a retrain, verifying
parity with the batch, dropping an app's namespace."""

from __future__ import annotations

from segstream.stream.lifecycle.namespace import drop_namespace, leader_topic
from segstream.stream.lifecycle.reassign import (
    REASSIGN_SOURCE,
    Reassigner,
    ReassignPlan,
    ReassignReport,
    plan_reassign,
    reassign_all,
    user_id_of,
)
from segstream.stream.lifecycle.replay import (
    ReplayEvent,
    ReplayPlan,
    build_events,
    publish_events,
    read_replay_plan,
)
from segstream.stream.lifecycle.verify import ParityReport, compare_with_batch

__all__ = [
    "REASSIGN_SOURCE",
    "ParityReport",
    "ReassignPlan",
    "ReassignReport",
    "Reassigner",
    "ReplayEvent",
    "ReplayPlan",
    "build_events",
    "compare_with_batch",
    "drop_namespace",
    "leader_topic",
    "plan_reassign",
    "publish_events",
    "read_replay_plan",
    "reassign_all",
    "user_id_of",
]
