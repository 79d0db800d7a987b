"""The stream's pure rules: event records and validation, change planning, dead letters, topics.

No I/O here: everything is a function of its arguments, so it is unit-tested without servers
and shared by the worker, the API and the lifecycle tools. The lowest layer of
:mod:`segstream.stream` (it imports only :mod:`segstream.training`'s definitions).

:mod:`~segstream.stream.domain.assignment` is not re-exported here: it brings the model's
pandas, which a command that only reads events, lag or state must not load at its start.
"""

from __future__ import annotations

from segstream.stream.domain.batch import ParsedBatch, RawRecord, parse_batch, plan_settles
from segstream.stream.domain.changes import (
    change_due,
    change_sequence,
    current_segment,
    encode_change,
    encode_leave,
    event_id,
    is_leave,
    outbox_outputs,
    plan_settle,
)
from segstream.stream.domain.dead_letters import HEADER_NAMES, dead_letter, read_headers
from segstream.stream.domain.events import (
    MAX_EVENT_BYTES,
    REASONS,
    STATUSES,
    Event,
    OrderEvent,
    OrderItem,
    Source,
    UnknownFields,
    UserEvent,
    UserLeft,
    load_schema,
    parse_event,
    parse_order,
    parse_user,
    user_key,
)
from segstream.stream.domain.leaving import Leave, plan_leave, split_rounds
from segstream.stream.domain.observer import WorkerObserver
from segstream.stream.domain.rates import RollingCounter
from segstream.stream.domain.topics import Output, Topics
from segstream.stream.domain.user import Settle, SettleOutcome, UserState

__all__ = [
    "HEADER_NAMES",
    "MAX_EVENT_BYTES",
    "REASONS",
    "STATUSES",
    "Event",
    "Leave",
    "OrderEvent",
    "OrderItem",
    "Output",
    "ParsedBatch",
    "RawRecord",
    "RollingCounter",
    "Settle",
    "SettleOutcome",
    "Source",
    "Topics",
    "UnknownFields",
    "UserEvent",
    "UserLeft",
    "UserState",
    "WorkerObserver",
    "change_due",
    "change_sequence",
    "current_segment",
    "dead_letter",
    "encode_change",
    "encode_leave",
    "event_id",
    "is_leave",
    "load_schema",
    "outbox_outputs",
    "parse_batch",
    "parse_event",
    "parse_order",
    "parse_user",
    "plan_leave",
    "plan_settle",
    "plan_settles",
    "read_headers",
    "split_rounds",
    "user_key",
]
