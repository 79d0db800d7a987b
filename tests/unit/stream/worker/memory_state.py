"""In-memory stand-ins for the batch processor's own seams: its state and its sender.

:class:`MemoryState` implements :class:`~segstream.stream.worker.processor.BatchState` with the
contract ``RedisState`` documents (fenced, idempotent ``apply``; compare-and-set ``settle``;
an outbox per user that survives an erasure until it is cleared). Its feature rules are a
simplification (a profile replaces the last one, an order id counts once, the most frequent
brand and category win with ties to the smaller name): the processor's tests are about what
it decides from the states it is given, not about ``apply.lua``, whose rules are tested on a
real Redis in tests/integration.

Failures are injected per step (``fail``) to test the processor's retries and routing; a
failure is raised before the step changes anything, as a lost connection would be.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from segstream.errors import ReplicaWaitTimeout
from segstream.stream.domain.events import Event, OrderEvent, Source, UserEvent, UserLeft
from segstream.stream.domain.leaving import Leave
from segstream.stream.domain.topics import Output
from segstream.stream.domain.user import Settle, SettleOutcome, UserState
from segstream.stream.state.replicas import ReplicaShortfall


@dataclass
class Stored:
    """One user's hash, as plain values."""

    age: int | None = None
    gender: str | None = None
    country: str | None = None
    traffic_source: str | None = None
    orders: set[int] = field(default_factory=set)
    brands: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    segment: int | None = None
    model_version: str | None = None
    drift_epoch: int | None = None
    changes: int = 0
    feature_version: int = 0
    fences: dict[tuple[str, int], int] = field(default_factory=dict)


def _leader(counts: Counter[str]) -> str | None:
    return min(counts, key=lambda name: (-counts[name], name)) if counts else None


class MemoryState:
    """A :class:`~segstream.stream.worker.processor.BatchState` in a dict (see the module)."""

    def __init__(self) -> None:
        self.users: dict[int, Stored] = {}
        self.outboxes: dict[int, list[bytes]] = {}
        self.shortfall = ReplicaShortfall(0)
        self.fail: dict[str, list[BaseException]] = {"apply": [], "settle": [], "clear": []}
        """Step name -> errors to raise, one per call, before the step does anything."""
        self.unacknowledged_applies = 0
        """How many next ``apply`` calls write, then raise :class:`ReplicaWaitTimeout`."""
        self.before_settle: Callable[[], None] | None = None
        """Called at the start of every ``settle_outcome`` (another writer acting in between)."""
        self.calls: list[str] = []
        """Every step called, in order (failed ones included)."""

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if self.fail[name]:
            raise self.fail[name].pop(0)

    def _state(self, user_id: int, applied: int) -> UserState:
        stored = self.users.get(user_id) or Stored()
        return UserState(
            user_id=user_id,
            applied=applied,
            age=stored.age,
            gender=stored.gender,
            country=stored.country,
            traffic_source=stored.traffic_source,
            total_orders=len(stored.orders),
            most_frequent_brand=_leader(stored.brands),
            most_frequent_category=_leader(stored.categories),
            segment=stored.segment,
            model_version=stored.model_version,
            pending=len(self.outboxes.get(user_id, [])),
            changes=stored.changes,
            feature_version=stored.feature_version,
        )

    def _apply_one(self, stored: Stored, source: Source, event: Event) -> tuple[bool, bool]:
        """Apply one event; (fresh, features changed)."""
        fence = (source.topic, source.partition)
        if source.offset <= stored.fences.get(fence, -1):
            return False, False
        stored.fences[fence] = source.offset
        if isinstance(event, UserEvent):
            stored.age, stored.gender = event.age, event.gender
            stored.country, stored.traffic_source = event.country, event.traffic_source
            return True, True
        if isinstance(event, OrderEvent):
            if event.order_id in stored.orders:
                return True, False
            stored.orders.add(event.order_id)
            stored.brands.update(item.brand for item in event.items if item.brand)
            stored.categories.update(item.category for item in event.items if item.category)
            return True, True
        assert isinstance(event, UserLeft)  # a fence only: settle erased the user
        return True, False

    async def apply(self, by_user: Mapping[int, Sequence[tuple[Source, Event]]]) -> list[UserState]:
        self._step("apply")
        states = []
        for user_id, events in by_user.items():
            stored = self.users.get(user_id)
            if stored is None and events:
                stored = self.users[user_id] = Stored()
            fresh = changed = 0
            for source, event in events:
                assert stored is not None
                new, moved = self._apply_one(stored, source, event)
                fresh, changed = fresh + new, changed or moved
            if changed and stored is not None:
                stored.feature_version += 1
            states.append(self._state(user_id, fresh))
        if self.unacknowledged_applies:
            self.unacknowledged_applies -= 1
            raise ReplicaWaitTimeout("0 of 1 replicas acknowledged (injected)", result=states)
        return states

    def _sees(self, stored: Stored, row: Settle | Leave) -> bool:
        same = (stored.segment, stored.model_version, stored.changes) == (
            row.seen_segment,
            row.seen_model_version,
            row.seen_changes,
        )
        if isinstance(row, Settle):
            return same and stored.feature_version == row.seen_feature_version
        return same

    def _settle_one(self, row: Settle | Leave) -> bool:
        """Write one row; False when refused."""
        stored = self.users.get(row.user_id)
        if isinstance(row, Leave):
            fence = (row.source.topic, row.source.partition)
            if stored is None or row.source.offset <= stored.fences.get(fence, -1):
                return True  # not stored, or already past this leave: nothing to erase
            if not self._sees(stored, row):
                return False
            del self.users[row.user_id]
            self.outboxes.setdefault(row.user_id, []).append(row.change)
            return True
        if not row.writes:
            return True
        stored = stored or Stored()
        if not self._sees(stored, row):
            return False
        stored.segment, stored.model_version = row.segment, row.model_version
        stored.drift_epoch = row.drift_epoch
        if row.change is not None:
            stored.changes += 1
            self.outboxes.setdefault(row.user_id, []).append(row.change)
        self.users[row.user_id] = stored
        return True

    async def settle_outcome(self, settles: Sequence[Settle | Leave]) -> SettleOutcome:
        self._step("settle")
        if self.before_settle is not None:
            self.before_settle()
        refused = frozenset(row.user_id for row in settles if not self._settle_one(row))
        pending = {
            row.user_id: list(self.outboxes[row.user_id])
            for row in settles
            if self.outboxes.get(row.user_id)
        }
        return SettleOutcome(pending, refused)

    async def clear(self, published: Mapping[int, Sequence[bytes]]) -> None:
        self._step("clear")
        for user_id, changes in published.items():
            outbox = self.outboxes.get(user_id, [])
            for change in changes:
                if change in outbox:
                    outbox.remove(change)
            if not outbox:
                self.outboxes.pop(user_id, None)


class MemorySender:
    """A :class:`~segstream.stream.kafka.publisher.Sender` that keeps what it acknowledged."""

    def __init__(self) -> None:
        self.sent: list[Output] = []
        self.fail: list[BaseException] = []
        """Errors to raise, one per ``publish`` call, before anything of it is sent."""

    async def publish(self, outputs: Sequence[Output]) -> None:
        if self.fail:
            raise self.fail.pop(0)
        self.sent.extend(outputs)

    def to(self, topic: str) -> list[Output]:
        """What was acknowledged on ``topic``, in order."""
        return [output for output in self.sent if output.topic == topic]
