"""What the batch processor decides, with no server: its state and sender are in memory.

The processor's seams are :class:`~segstream.stream.worker.processor.BatchState` and
:class:`~segstream.stream.kafka.publisher.Sender`; the model is a real (small) artifact. The
same paths on real Redis and Kafka are in tests/integration/stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions as redis_errors
from aiokafka.errors import KafkaConnectionError

from segstream.errors import SegstreamError
from segstream.stream.domain.dead_letters import REASON, TOPIC, TRUNCATED, read_headers
from segstream.stream.domain.events import user_key
from segstream.stream.domain.partitioning import expected_partition
from segstream.stream.domain.topics import Topics
from segstream.stream.domain.user import UserState
from segstream.stream.http.metrics import Metrics
from segstream.stream.worker.assigner import Assigner
from segstream.stream.worker.processor import LEAVE_ATTEMPTS, BatchProcessor
from segstream.training.artifact import Model
from tests.unit.stream.worker.memory_state import MemorySender, MemoryState

TOPICS = Topics("users", "orders", "segment-changes", "user-segments", "dead-letters")


@dataclass
class Record:
    """An input record as the consumer hands it over (no Kafka timestamp: read now)."""

    topic: str
    offset: int
    key: bytes | None
    value: bytes | None
    partition: int = 0
    headers: Any = None


def profile(user_id: int, offset: int, age: int = 20, **extra: object) -> Record:
    document = {
        "user_id": user_id,
        "age": age,
        "gender": "F",
        "country": "China",
        "traffic_source": "Email",
        "created_at": f"2024-01-01T00:00:{offset % 60:02d}Z",
        **extra,
    }
    return Record("users", offset, str(user_id).encode(), json.dumps(document).encode())


def order(user_id: int, offset: int, order_id: int, category: str = "Jeans") -> Record:
    document = {
        "order_id": order_id,
        "user_id": user_id,
        "status": "Shipped",
        "created_at": f"2024-01-02T00:00:{offset % 60:02d}Z",
        "items": [{"product_id": 1, "brand": "Zara", "category": category, "sale_price": 9.5}],
    }
    return Record("orders", offset, str(user_id).encode(), json.dumps(document).encode())


def leave(user_id: int, offset: int) -> Record:
    """A tombstone on users: the user left (segstream forget)."""
    return Record("users", offset, str(user_id).encode(), None)


class World:
    """A processor over a memory state and sender, with its model in a models directory."""

    def __init__(self, models: Path, metrics: Metrics) -> None:
        self.state = MemoryState()
        self.sender = MemorySender()
        self.models = models
        self.assigner = Assigner(models, check_every_s=0.0)
        self.processor = BatchProcessor(self.state, self.assigner, self.sender, TOPICS)
        self.processor.metrics = metrics
        self.metrics = metrics

    def process(self, records: Sequence[Record]) -> None:
        asyncio.run(self.processor.process(records))

    def changes(self) -> list[dict[str, Any]]:
        """Every segment change published so far, decoded, in order."""
        return [json.loads(out.value or b"") for out in self.sender.to(TOPICS.segment_changes)]

    def current(self) -> list[tuple[bytes | None, bytes | None]]:
        """Every user-segments record published so far: (key, value)."""
        return [(out.key, out.value) for out in self.sender.to(TOPICS.user_segments)]

    def segment_of(self, age: int, category: str = "Jeans", orders: int = 1) -> int:
        """The model's segment for a user of :func:`profile` with ``orders`` such orders."""
        state = UserState(1, 0, age, "F", "China", "Email", orders, "Zara", category, None, None, 0)
        return int(self.assigner.assign([state])[0])

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def world(model: Model, models_dir: Callable[..., Path]) -> World:
    return World(models_dir(model).parent, Metrics())


class TestAssignment:
    def test_an_assignable_user_gets_one_change_and_their_current_segment(
        self, world: World
    ) -> None:
        world.process([profile(5, 0), order(5, 0, order_id=100)])

        (change,) = world.changes()
        assert change["user_id"] == 5 and change["sequence"] == 1
        assert change["previous_segment"] is None
        assert change["segment"] == world.segment_of(20)
        assert change["model_version"] == "v1"
        assert change["source"] == {"topic": "orders", "partition": 0, "offset": 0}
        ((key, value),) = world.current()
        assert key == user_key(5)
        assert value is not None and json.loads(value)["segment"] == change["segment"]
        assert world.state.outboxes == {}, "published changes are cleared from the outbox"
        assert world.processor.stats.as_dict() == {
            "records": 2, "valid": 2, "fresh": 2, "assigned": 1, "changes": 1,
            "batches": 1, "dead_letters": {},
        }  # fmt: skip

    def test_a_user_without_an_order_is_stored_but_neither_assigned_nor_published(
        self, world: World
    ) -> None:
        world.process([profile(5, 0)])

        assert world.sender.sent == []
        assert world.state.users[5].age == 20
        assert world.processor.stats.assigned == 0

    def test_a_segment_move_is_the_next_change_of_the_user(self, world: World) -> None:
        young, old = world.segment_of(20), world.segment_of(70)
        assert young != old, "the small model must tell these two users apart"
        world.process([profile(5, 0), order(5, 0, order_id=100)])
        world.process([profile(5, 1, age=70)])

        first, second = world.changes()
        assert (second["sequence"], second["previous_segment"], second["segment"]) == (
            2,
            young,
            old,
        )
        assert second["event_id"] != first["event_id"]
        assert [json.loads(v or b"")["segment"] for _, v in world.current()] == [young, old]

    def test_an_event_that_keeps_the_segment_publishes_nothing(self, world: World) -> None:
        world.process([profile(5, 0), order(5, 0, order_id=100)])
        world.process([profile(5, 1)])  # the same profile again, at a later offset

        assert len(world.changes()) == 1
        assert world.processor.stats.fresh == 3, "the re-sent profile was applied"

    def test_a_redelivered_batch_changes_and_publishes_nothing_again(self, world: World) -> None:
        batch = [profile(5, 0), order(5, 0, order_id=100)]
        world.process(batch)
        world.process(batch)

        assert len(world.changes()) == 1
        stats = world.processor.stats
        assert (stats.valid, stats.fresh, stats.changes) == (4, 2, 1)

    def test_a_new_model_version_is_stored_without_an_event_when_the_segment_stays(
        self, world: World, new_model: Callable[..., Model], models_dir: Callable[..., Path]
    ) -> None:
        world.process([profile(5, 0), order(5, 0, order_id=100)])
        models_dir(new_model("v2"))  # the same centres: every user keeps their segment
        world.process([profile(5, 1)])

        assert len(world.changes()) == 1
        assert world.state.users[5].model_version == "v2"

    def test_users_of_one_batch_are_assigned_in_one_call_each_with_their_own_change(
        self, world: World
    ) -> None:
        world.process([profile(5, 0), profile(6, 1, age=70), order(6, 0, 7), order(5, 1, 8)])

        assert world.state.calls == ["apply", "settle", "clear"], "one round trip per step"
        by_user = {c["user_id"]: c["segment"] for c in world.changes()}
        assert by_user == {6: world.segment_of(70), 5: world.segment_of(20)}


class TestUnassignAndLeave:
    def test_a_user_who_loses_a_feature_is_unassigned_with_a_tombstone(self, world: World) -> None:
        world.process([profile(5, 0), order(5, 0, order_id=100)])
        # What change data capture can do (the user's only order moved to another user).
        stored = world.state.users[5]
        stored.orders.clear()
        stored.brands.clear()
        stored.categories.clear()
        world.process([profile(5, 1)])

        unassign = world.changes()[-1]
        assert (unassign["sequence"], unassign["segment"]) == (2, None)
        assert world.current()[-1] == (user_key(5), None)
        assert world.state.users[5].segment is None
        assert world.state.users[5].model_version is None

    def test_a_tombstone_erases_the_user_and_publishes_their_leave(self, world: World) -> None:
        world.process([profile(5, 0), order(5, 0, order_id=100)])
        world.process([leave(5, 1)])

        left = world.changes()[-1]
        assert left["left"] is True and left["sequence"] == 2
        assert left["previous_segment"] == world.segment_of(20)
        assert world.current()[-1] == (user_key(5), None)
        assert 5 not in world.state.users and world.state.outboxes == {}

    def test_a_leave_of_an_unknown_user_publishes_nothing(self, world: World) -> None:
        world.process([leave(9, 0)])

        assert world.sender.sent == []
        assert world.state.users == {}

    def test_a_user_back_after_leaving_in_the_same_batch_starts_afresh(self, world: World) -> None:
        world.process([profile(5, 0), order(5, 0, order_id=100)])
        world.process([leave(5, 1), profile(5, 2, age=70), order(5, 1, order_id=101)])

        _, left, again = world.changes()
        assert left["left"] is True and left["sequence"] == 2
        assert (again["sequence"], again["previous_segment"]) == (1, None)
        assert again["segment"] == world.segment_of(70)
        assert world.state.users[5].orders == {101}, "the old life's orders are gone"

    def test_a_redelivered_leave_erases_nothing_twice(self, world: World) -> None:
        world.process([profile(5, 0), order(5, 0, order_id=100)])
        batch = [leave(5, 1), profile(5, 2, age=70), order(5, 1, order_id=101)]
        world.process(batch)
        world.process(batch)

        assert len(world.changes()) == 3
        assert world.state.users[5].orders == {101}

    def test_a_leave_refused_by_another_writer_is_planned_again_from_a_fresh_read(
        self, world: World
    ) -> None:
        world.process([profile(5, 0), order(5, 0, order_id=100)])
        raced = []

        def reassign_once() -> None:
            # segstream reassign stores a new model version between our read and our write.
            if not raced:
                raced.append(True)
                world.state.users[5].model_version = "v9"

        world.state.before_settle = reassign_once
        world.process([leave(5, 1)])

        left = world.changes()[-1]
        assert left["left"] is True and left["model_version"] == "v9"
        assert 5 not in world.state.users

    def test_a_leave_refused_every_time_fails_the_batch_and_keeps_the_user(
        self, world: World
    ) -> None:
        world.process([profile(5, 0), order(5, 0, order_id=100)])
        versions = iter(range(100))

        def reassign_always() -> None:
            world.state.users[5].model_version = f"v{next(versions)}"

        world.state.before_settle = reassign_always
        with pytest.raises(SegstreamError, match=r"user\(s\) \[5\] could not be erased"):
            world.process([leave(5, 1)])

        assert world.state.calls.count("settle") == 2 + LEAVE_ATTEMPTS
        assert 5 in world.state.users, "not erased: the batch is retried"
        assert len(world.changes()) == 1


class TestDeadLetters:
    def test_bad_records_are_dead_lettered_with_their_reason_and_the_rest_processed(
        self, world: World
    ) -> None:
        world.process([profile(5, 0), Record("orders", 0, b"5", b"{oops"), order(5, 1, 100)])

        (letter,) = world.sender.to(TOPICS.dead_letters)
        headers = read_headers(letter.headers)
        assert headers[TOPIC] == "orders" and letter.value == b"{oops"
        assert world.processor.stats.dead_letters == {headers[REASON]: 1}
        assert world.count("segstream_dead_letters_total", reason=headers[REASON]) == 1
        assert len(world.changes()) == 1, "the valid events went on"

    def test_a_dead_letter_over_the_topic_limit_is_truncated_and_logged(
        self, world: World, caplog: pytest.LogCaptureFixture
    ) -> None:
        world.processor.dead_letter_max_bytes = 600
        world.process([Record("orders", 3, b"5", b"x" * 5_000)])

        (letter,) = world.sender.to(TOPICS.dead_letters)
        assert len(letter.value or b"") < 600
        assert TRUNCATED in read_headers(letter.headers)
        assert "truncated" in caplog.text and "orders[0]@3" in caplog.text

    def test_unknown_fields_are_ignored_counted_and_logged_once(
        self, world: World, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING):
            world.process([profile(5, 0, shoe_size=42), profile(6, 1, shoe_size=40)])

        assert world.sender.to(TOPICS.dead_letters) == []
        assert set(world.state.users) == {5, 6}
        assert world.count("segstream_unknown_fields_total", topic="users") == 2
        assert caplog.text.count("shoe_size") == 1

    def test_unknown_fields_are_dead_letters_when_so_configured(self, world: World) -> None:
        world.processor.unknown_fields = "dead_letter"
        world.process([profile(5, 0, shoe_size=42)])

        assert len(world.sender.to(TOPICS.dead_letters)) == 1
        assert world.state.users == {}


class TestPlacement:
    def test_a_record_off_its_keys_partition_is_processed_counted_and_logged_once(
        self, world: World, caplog: pytest.LogCaptureFixture
    ) -> None:
        world.processor.partitions = {"users": 4}
        wrong = (expected_partition(b"5", 4) + 1) % 4
        records = [dataclasses.replace(profile(5, n), partition=wrong) for n in (0, 1)]
        with caplog.at_level(logging.WARNING):
            world.process(records)

        assert 5 in world.state.users
        assert world.count("segstream_misplaced_records_total", topic="users") == 2
        ours = [r for r in caplog.records if r.name.startswith("segstream.")]
        assert len([r for r in ours if r.levelno == logging.WARNING]) == 1


class TestFailures:
    def test_transient_redis_failures_are_retried_counted_and_the_batch_completes(
        self, world: World
    ) -> None:
        for step in ("apply", "settle", "clear"):
            world.state.fail[step].append(redis_errors.ConnectionError("connection reset"))
        world.process([profile(5, 0), order(5, 0, order_id=100)])

        assert len(world.changes()) == 1
        assert world.state.outboxes == {}
        assert world.count("segstream_redis_errors_total") == 3
        assert world.count("segstream_redis_retries_total") == 3

    def test_a_permanent_redis_failure_fails_the_batch_naming_the_cause(self, world: World) -> None:
        world.state.fail["apply"].append(redis_errors.AuthenticationError("invalid password"))
        with pytest.raises(SegstreamError, match="invalid password") as raised:
            world.process([profile(5, 0), order(5, 0, order_id=100)])

        assert "retrying cannot help" in str(raised.value)
        assert world.state.users == {} and world.changes() == []
        assert world.count("segstream_redis_retries_total") == 0

    def test_a_change_whose_publication_failed_is_sent_again_byte_for_byte(
        self, world: World
    ) -> None:
        batch = [profile(5, 0), order(5, 0, order_id=100)]
        world.sender.fail.append(KafkaConnectionError("broker gone"))
        with pytest.raises(KafkaConnectionError):
            world.process(batch)
        (queued,) = world.state.outboxes[5]

        world.process(batch)  # the batch was not acknowledged: it is redelivered

        assert [out.value for out in world.sender.to(TOPICS.segment_changes)] == [queued]
        assert world.state.outboxes == {}

    def test_a_crash_before_the_outbox_is_cleared_sends_the_same_change_again(
        self, world: World
    ) -> None:
        batch = [profile(5, 0), order(5, 0, order_id=100)]
        world.state.fail["clear"].append(redis_errors.NoPermissionError("no permission: LREM"))
        with pytest.raises(SegstreamError):
            world.process(batch)

        world.process(batch)

        first, again = world.sender.to(TOPICS.segment_changes)
        assert first.value == again.value, "same bytes, same event_id: consumers dedupe it"
        assert world.state.outboxes == {}

    def test_a_failed_batch_is_redelivered_whole_its_dead_letters_included(
        self, world: World
    ) -> None:
        world.state.fail["apply"].append(redis_errors.AuthenticationError("invalid password"))
        batch = [profile(5, 0), Record("orders", 0, b"5", b"{oops"), order(5, 1, order_id=100)]
        with pytest.raises(SegstreamError):
            world.process(batch)
        world.process(batch)

        letters = world.sender.to(TOPICS.dead_letters)
        # At least once: the failed attempt may or may not have sent its copy.
        assert letters and {(d.value, read_headers(d.headers)[TOPIC]) for d in letters} == {
            (b"{oops", "orders")
        }
        assert len(world.changes()) == 1

    def test_writes_acknowledged_late_by_replicas_are_retried_and_still_counted_fresh(
        self, world: World
    ) -> None:
        world.state.unacknowledged_applies = 1
        world.process([profile(5, 0), order(5, 0, order_id=100)])

        assert world.state.calls.count("apply") == 2
        assert world.processor.stats.fresh == 2, "the first attempt's fresh events count"
        assert world.count("segstream_redis_wait_timeouts_total") == 1
        assert len(world.changes()) == 1


def _comparable(outputs: Sequence[Any]) -> list[tuple[str, bytes | None, dict[str, Any]]]:
    """(topic, key, decoded value) of each output; a leave's ``occurred_at`` (the time it was
    processed, not an input's) left out."""
    rows = []
    for output in outputs:
        if not output.value:
            continue
        document = json.loads(output.value)
        if document.get("left"):
            document.pop("occurred_at")
        rows.append((output.topic, output.key, document))
    return rows


class TestOverlap:
    """The two stages of :meth:`BatchProcessor.prepare` / :meth:`~BatchProcessor.complete` as
    the pipeline interleaves them at depth 2: batch N+1's first stage before batch N's second.
    """

    def test_a_change_read_back_before_its_clear_is_sent_once_and_in_order(
        self, world: World
    ) -> None:
        young, old = world.segment_of(20), world.segment_of(70)
        processor = world.processor

        async def scenario() -> tuple[list[bytes], list[bytes]]:
            first = await processor.prepare([profile(5, 0), order(5, 0, order_id=100)])
            second = await processor.prepare([profile(5, 1, age=70)])  # before first's sends
            await processor.complete(first)
            await processor.complete(second)
            return first.pending[5], second.pending[5]

        first_pending, second_pending = asyncio.run(scenario())
        assert second_pending[0] == first_pending[0], "batch N's change was read back by N+1"
        first, second = world.changes()
        assert [(c["sequence"], c["segment"]) for c in (first, second)] == [(1, young), (2, old)]
        assert [json.loads(v or b"")["segment"] for _, v in world.current()] == [young, old]
        assert world.state.outboxes == {}, "every change sent was cleared"
        assert world.processor.stats.changes == 2

    def test_the_overlapped_order_publishes_what_the_sequential_order_does(
        self, model: Model, models_dir: Callable[..., Path]
    ) -> None:
        batches = [
            [profile(5, 0), order(5, 0, order_id=100), profile(6, 1, age=70)],
            [order(6, 1, order_id=101), profile(5, 2, age=70)],
            [leave(6, 3), profile(5, 4), order(7, 2, order_id=102), profile(7, 5)],
            [profile(6, 6, age=20), order(6, 3, order_id=103), profile(7, 7, age=70)],
        ]
        models = models_dir(model).parent
        sequential, overlapped = World(models, Metrics()), World(models, Metrics())
        for batch in batches:
            sequential.process(batch)

        async def interleaved() -> None:
            processor = overlapped.processor
            tail: asyncio.Future[None] | None = None
            for batch in batches:
                prepared = await processor.prepare(batch, tail)
                if tail is not None:
                    await tail
                tail = asyncio.ensure_future(processor.complete(prepared))
            assert tail is not None
            await tail

        asyncio.run(interleaved())
        assert _comparable(overlapped.sender.sent) == _comparable(sequential.sender.sent)
        assert len(overlapped.changes()) >= 5, "the batches must move segments to compare"
        assert overlapped.state.outboxes == sequential.state.outboxes == {}
        assert overlapped.state.users == sequential.state.users

    def test_a_batch_of_two_rounds_waits_for_the_previous_batchs_sends_first(
        self, world: World
    ) -> None:
        processor = world.processor
        order_of_sends: list[str] = []

        async def scenario() -> None:
            first = await processor.prepare([profile(5, 0), order(5, 0, order_id=100)])
            release = asyncio.Event()

            async def previous() -> None:
                await release.wait()
                await processor.complete(first)
                order_of_sends.append("previous batch sent")

            tail = asyncio.ensure_future(previous())
            # User 5 leaves and comes back in one batch: two rounds, the first one's sends
            # (the leave) may go only after the previous batch's change.
            second = asyncio.ensure_future(
                processor.prepare([leave(5, 1), profile(5, 2, age=70), order(5, 1, 101)], tail)
            )
            await asyncio.sleep(0.01)
            assert not second.done(), "the second round did not wait for the previous batch"
            assert world.changes() == []
            release.set()
            await processor.complete(await second)

        asyncio.run(scenario())
        assert order_of_sends == ["previous batch sent"]
        joined, left, again = world.changes()
        assert (joined["sequence"], left["left"], again["sequence"]) == (1, True, 1)
        assert world.state.outboxes == {}
