"""The lean consumer's commit gives back the acks it took when the commit does not finish.

Faust takes the offsets it commits out of its ack list before the request goes out, and
records the commit only once answered; a commit cancelled at the deadline (or failed) in
between would leave the list starting above the last recorded commit, which Faust reads as a
gap, and freeze that partition's commits for good. The broker is not the subject here: the
commit call is replaced by one that hangs or fails, and the ack bookkeeping is Faust's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from segstream.settings import Settings
from segstream.stream.worker.app import base_app
from segstream.stream.worker.consumer import LeanConsumer, use_lean_consumer

ORDERS = TP("orders", 0)
USERS = TP("users", 1)


def consumer_with_acks(
    tmp_path: Path,
    commit: Callable[..., Awaitable[bool]],
    assigned: set[TP],
    acked: dict[TP, range],
    committed: dict[TP, int],
    deadline_s: float = 0.05,
) -> LeanConsumer:
    """A lean consumer (not started) with the given acks, last commits and assignment, whose
    commit request is ``commit``, abandoned after ``deadline_s``."""
    app = base_app(Settings(), tmp_path)
    use_lean_consumer(app, commit_deadline_s=deadline_s)
    consumer = app.consumer
    assert isinstance(consumer, LeanConsumer)
    for tp, offsets in acked.items():
        consumer._acked[tp].extend(offsets)
        consumer._acked_index[tp].update(offsets)
    consumer._committed_offset.update(committed)
    consumer._commit_offsets = commit  # type: ignore[method-assign]
    consumer.assignment = lambda: set(assigned)  # type: ignore[method-assign]
    return consumer


async def hangs(offsets: Any, start_new_transaction: bool = True) -> bool:
    await asyncio.Event().wait()  # a broker that never answers
    return True


async def fails(offsets: Any, start_new_transaction: bool = True) -> bool:
    raise ConnectionError("broker gone")


def ack(consumer: LeanConsumer, tp: TP, offsets: range) -> None:
    consumer._acked[tp].extend(offsets)
    consumer._acked_index[tp].update(offsets)


def test_a_commit_abandoned_at_its_deadline_leaves_every_ack_for_the_next_commit(
    tmp_path: Path,
) -> None:
    consumer = consumer_with_acks(tmp_path, hangs, {ORDERS}, {ORDERS: range(10, 20)}, {ORDERS: 10})
    committed = asyncio.run(consumer.commit())
    assert committed is False
    ack(consumer, ORDERS, range(20, 30))  # the worker goes on
    # The next commit covers what the abandoned one took and everything acked since.
    assert consumer._filter_committable_offsets([ORDERS]) == {ORDERS: 30}


def test_a_failed_commit_gives_back_its_acks_and_raises(tmp_path: Path) -> None:
    consumer = consumer_with_acks(
        tmp_path,
        fails,
        {ORDERS, USERS},
        {ORDERS: range(10, 20), USERS: range(0, 5)},
        {ORDERS: 10},
    )
    with pytest.raises(ConnectionError):
        asyncio.run(consumer.commit())
    assert consumer._filter_committable_offsets([ORDERS, USERS]) == {ORDERS: 20, USERS: 5}


def test_acks_of_a_partition_revoked_meanwhile_are_not_given_back(tmp_path: Path) -> None:
    consumer = consumer_with_acks(
        tmp_path, fails, {USERS}, {ORDERS: range(10, 20), USERS: range(0, 5)}, {ORDERS: 10}
    )
    with pytest.raises(ConnectionError):
        asyncio.run(consumer.commit())
    assert consumer._acked[ORDERS] == []
    assert consumer._acked[USERS] == list(range(0, 5))


def test_a_commit_that_finishes_takes_its_acks_for_good(tmp_path: Path) -> None:
    answered: list[dict[TP, int]] = []

    async def answers(offsets: dict[TP, int], start_new_transaction: bool = True) -> bool:
        answered.append(dict(offsets))
        consumer._committed_offset.update(offsets)  # as Faust's _commit_offsets does
        return True

    consumer = consumer_with_acks(
        tmp_path, answers, {ORDERS}, {ORDERS: range(10, 20)}, {ORDERS: 10}
    )
    assert asyncio.run(consumer.commit()) is True
    assert answered == [{ORDERS: 20}]
    assert consumer._acked[ORDERS] == []
    assert consumer._filter_committable_offsets([ORDERS]) == {}


def test_a_stop_arriving_as_the_commit_is_answered_still_stops_the_caller(
    tmp_path: Path,
) -> None:
    # The cancel lands in the same loop turn as the broker's answer: a deadline that returned
    # the answer then (asyncio.wait_for before Python 3.12) lost the cancel, and a stopping
    # worker's task went on as if never stopped.
    async def scenario() -> bool:
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        sent = asyncio.Event()

        async def answered_later(offsets: Any, start_new_transaction: bool = True) -> bool:
            sent.set()
            return await answer

        consumer = consumer_with_acks(
            tmp_path, answered_later, {ORDERS}, {ORDERS: range(10, 20)}, {ORDERS: 10}, 60.0
        )
        committing = asyncio.ensure_future(consumer.commit())
        await sent.wait()
        answer.set_result(True)
        committing.cancel()
        await asyncio.wait([committing], timeout=30)
        return committing.cancelled()

    assert asyncio.run(scenario()) is True
