"""Faust's Kafka transport for the worker: a lean fetcher, and commits that cannot hang it.

:class:`LeanTransport` is Faust's aiokafka transport with two of the classes a transport names
replaced, both through the attributes Faust reads them from (``Transport.Consumer`` and
``Transport.Fetcher``); the fetch path overrides no private method (the consumer thread's fetch
wait, below, is the one private hook):

- ``Fetcher`` is :class:`~segstream.stream.worker.fetcher.LeanFetcher`: Faust's fetch loop
  without Faust's per-message tasks, with Faust's suspension semantics, and with one reference
  per message held for the worker (``hold_messages``); the records of ``direct_topics`` skip
  Faust's conductor and streams and go in chunks to the transport's sink
  (:meth:`LeanTransport.deliver_to`), which acks them a batch at a time
  (:meth:`LeanConsumer.ack_all`); see its module;
- ``Consumer`` is :class:`LeanConsumer`: Faust's aiokafka consumer whose public ``commit`` is
  abandoned after ``commit_deadline_s`` and whose public ``ack`` starts the commit due every
  ``broker_commit_every`` acks in the background.

Commits never run inline in the fetch loop. Faust's own loop commits every
``broker_commit_every`` acks by awaiting ``commit()`` itself, and a commit waits for any commit
in flight: one hung commit (a coordinator lost to a broker crash) then froze fetching for good.
Here the fetch loop does not commit at all: acks start that commit in the background, and
every commit (the acks', Faust's timer's, the ones of a revocation and of the shutdown) is
abandoned after ``commit_deadline_s``; failures and timeouts are recorded in a
:class:`~segstream.stream.worker.watchdog.Progress`, whose watchdog reports a commit stall and
restarts the worker if commits do not recover.

**Acks outlive a commit that does not finish.** Faust's commit takes the acked offsets it is
about to commit out of its ack list (``Consumer._new_offset``) before the request is sent, and
records the commit only once it is answered. A commit abandoned at the deadline, or failed, in
between would lose those acks; the ack list would then start above the last recorded commit,
which Faust reads as a gap at its head, and no commit of that partition would ever be made
again: the committed offsets freeze while the worker goes on processing (seen after a broker
crash). :meth:`LeanConsumer._commit_tps` gives them back, so the next commit covers them.

**Fetch wait.** Faust builds its aiokafka consumer with a fixed ``fetch_max_wait_ms`` of
1,500 ms. aiokafka leaves a partition whose fetched records are still unread (for more than
its 100 ms prefetch backoff) out of the next request to that partition's leader, and sends no
other request to a broker that has one in flight. With several brokers, that request can hold
only idle partitions (the other input topic's) and wait at the broker for the whole 1,500 ms
before the held-out partition is fetched again: on three brokers, orders sat up to 1.6 s
before the worker saw them. :class:`LeanConsumerThread` sets the configured wait
(``SEGSTREAM_FETCH_MAX_WAIT_MS``) instead, which bounds that stall. Faust has no setting for
the wait, so this overrides two private methods (``_new_consumer_thread``,
``_create_worker_consumer``; checked by :mod:`~segstream.stream.worker.faust_internals`) and
sets aiokafka's ``_fetch_max_wait_ms`` (through :mod:`~segstream.stream.worker.
aiokafka_internals`); the worker refuses to start, naming the version, if either library
changes them.

Nothing is acked that was not processed, so "at least once, exactly once in effect" (the Redis
fences) holds. Install it with :func:`use_lean_consumer` before the app starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer
from faust.exceptions import ProducerSendError
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

from segstream.stream.clients.retry import describe
from segstream.stream.worker.aiokafka_internals import check_aiokafka_internals, set_fetch_max_wait
from segstream.stream.worker.faust_internals import (
    check_faust_internals,
    commit_floor,
    give_back_acks,
)
from segstream.stream.worker.fetcher import DirectSink, LeanFetcher
from segstream.stream.worker.watchdog import Progress

__all__ = ["LeanConsumer", "LeanConsumerThread", "LeanTransport", "use_lean_consumer"]

log = logging.getLogger(__name__)


class LeanConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, whose aiokafka consumer long-polls for ``fetch_max_wait_ms``."""

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Faust passes a fixed fetch_max_wait_ms=1500; aiokafka reads it when the consumer
        # starts, so setting it here takes effect (aiokafka_internals).
        set_fetch_max_wait(consumer, cast(LeanTransport, transport).fetch_max_wait_ms)
        return consumer


class LeanConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with deadline-bound, background commits (module docstring)."""

    _background_commit: asyncio.Future[bool] | None = None
    _acks_since_commit: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._commit_every_acks: int | None = self.app.conf.broker_commit_every
        """Acks between two background commits (Faust's ``broker_commit_every``)."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return LeanConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def _lean(self) -> LeanTransport:
        return cast(LeanTransport, self.transport)

    def ack(self, message: Message) -> bool:
        """Faust's ack; every ``broker_commit_every`` acks also start a background commit."""
        if not super().ack(message):
            return False
        self._acks_since_commit += 1
        self._maybe_commit()
        return True

    def ack_all(self, messages: Iterable[Message]) -> int:
        """Ack every message processed (Faust's ack each), then start the commit that is due,
        if one is: one step per batch. Returns how many were not acked before."""
        ack = super().ack
        acked = sum(map(ack, messages))
        self._acks_since_commit += acked
        self._maybe_commit()
        return acked

    def _maybe_commit(self) -> None:
        """Start a background commit when ``broker_commit_every`` acks were made since the last."""
        commit_every = self._commit_every_acks
        if (
            commit_every is not None
            and self._acks_since_commit >= commit_every
            and not self.suspend_flow.is_set()
        ):
            # Not while the flow is suspended (a rebalance or a stop): Faust's own loop never
            # commits then either, and the revocation commits what was acked itself.
            self._acks_since_commit = 0
            self._start_commit()

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Commit every acked offset; abandoned after ``commit_deadline_s``.

        A background commit still running is waited for first (it is bounded by the same
        deadline), so that the offsets acked since it started are committed too: Faust's own
        ``commit`` would only wait for it and return. Returns whether this call committed.
        """
        running = self._background_commit
        if running is not None and not running.done():
            await asyncio.wait([running])
        return await self._commit_within_deadline(topics, start_new_transaction)

    async def _commit_within_deadline(self, topics: Any, start_new_transaction: bool) -> bool:
        """Faust's commit, abandoned after ``commit_deadline_s``; outcomes go to Progress.

        A timeout is logged and returns False (the acked offsets stay acked and are committed
        by a later commit); a failure is recorded and raised.
        """
        deadline = self._lean.commit_deadline_s
        progress = self._lean.progress
        started = time.monotonic()
        try:
            async with asyncio.timeout(deadline):
                committed = await super().commit(
                    topics, start_new_transaction=start_new_transaction
                )
        except TimeoutError:
            progress.commit_failed(started, f"no answer within {deadline:g} s")
            log.error(
                "offset commit abandoned after %g s (SEGSTREAM_COMMIT_DEADLINE_S); "
                "retrying with the next commit",
                deadline,
            )
            return False
        except Exception as exc:
            progress.commit_failed(started, describe(exc))
            raise
        progress.commit_done()
        return committed

    async def _commit_tps(self, tps: Iterable[TP], start_new_transaction: bool) -> bool:
        """Faust's ``_commit_tps``, giving back the acks it took if the commit does not finish
        (cancelled at the deadline, or failed): see "Acks outlive a commit" above."""
        tps = list(tps)
        floors = {tp: commit_floor(self, tp) for tp in tps}
        offsets: dict[TP, int] = self._filter_committable_offsets(tps)
        if not offsets:
            return False
        try:
            await self._handle_attached(offsets)
            committed: bool = await self._commit_offsets(
                offsets, start_new_transaction=start_new_transaction
            )
        except ProducerSendError as exc:
            self._give_back(offsets, floors)
            await self.crash(exc)  # as Faust's own: an attached message was not sent
            return False
        except BaseException:
            self._give_back(offsets, floors)
            raise
        return committed

    def _give_back(self, offsets: dict[TP, int], floors: dict[TP, int | None]) -> None:
        """Return ``floor..offset-1`` of every partition still assigned to its acked offsets
        (a revoked one is not: its next owner starts from the committed offset)."""
        assigned = self.assignment()
        for tp, offset in offsets.items():
            floor = floors.get(tp)
            if floor is not None and tp in assigned:
                give_back_acks(self, tp, range(floor, offset))

    def _start_commit(self) -> None:
        """Commit in the background unless a commit started here is still running."""
        running = self._background_commit
        if running is None or running.done():
            self._background_commit = asyncio.ensure_future(
                self._commit_within_deadline(None, True)
            )
            self._background_commit.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future[bool]) -> None:
    error = None if task.cancelled() else task.exception()
    if error is not None:
        log.error("background offset commit failed: %s", describe(error))


class LeanTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`LeanConsumer` and :class:`LeanFetcher`."""

    Consumer = LeanConsumer
    Fetcher = LeanFetcher

    def __init__(
        self,
        *args: Any,
        progress: Progress,
        commit_deadline_s: float,
        hold_messages: bool,
        fetch_max_wait_ms: int = 1500,
        direct_topics: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.direct_topics = frozenset(direct_topics)
        """Topics whose records the fetcher hands to :attr:`sink` (see the fetcher module)."""
        self.sink: DirectSink | None = None
        """Where the fetcher hands the direct topics' records; set by :meth:`deliver_to`."""
        self.sink_ready = asyncio.Event()
        """Set while :attr:`sink` is not ``None``."""
        self.fetch_max_wait_ms = fetch_max_wait_ms
        """Longest a fetch request waits at a broker for data, in ms (see use_lean_consumer)."""
        self.progress = progress
        """Where the consumer records its commits' outcomes (read by the watchdog)."""
        self.commit_deadline_s = commit_deadline_s
        """Seconds after which a commit is abandoned."""
        self.hold_messages = hold_messages
        """Hand each message over with one more reference, released by the worker."""

    def deliver_to(self, sink: DirectSink | None) -> None:
        """Hand the direct topics' records to ``sink`` from now on (``None``: hold them)."""
        self.sink = sink
        if sink is None:
            self.sink_ready.clear()
        else:
            self.sink_ready.set()


def use_lean_consumer(
    app: faust.App,
    *,
    progress: Progress | None = None,
    commit_deadline_s: float = 30.0,
    hold_messages: bool = False,
    fetch_max_wait_ms: int = 1500,
    direct_topics: Iterable[str] = (),
) -> None:
    """Make ``app`` consume through :class:`LeanTransport`; call before the app starts.

    Args:
        progress: records commit outcomes (for a watchdog); a private one if ``None``.
        commit_deadline_s: a commit still running after this many seconds is abandoned.
        hold_messages: hold one reference on every message for the agent, which must release
            it (``stream.ack(event)``) once the event is processed; see
            :mod:`~segstream.stream.worker.fetcher`.
        fetch_max_wait_ms: longest a fetch request waits at a broker for data, in ms
            (Faust's own value by default); see the module docstring's "Fetch wait".
        direct_topics: topics whose records skip the conductor and Faust's streams: the
            fetcher hands them in chunks to the sink set with
            :meth:`LeanTransport.deliver_to`, which acks them (``LeanConsumer.ack_all``);
            see :mod:`~segstream.stream.worker.fetcher`.

    Raises:
        ConfigError: the installed faust-streaming (or mode-streaming) lacks the consumer
            state the fetcher reads or the hooks overridden here
            (:func:`~segstream.stream.worker.faust_internals.check_faust_internals`), or
            aiokafka no longer keeps its fetch wait where it is set
            (:func:`~segstream.stream.worker.aiokafka_internals.check_aiokafka_internals`).
    """
    check_faust_internals()
    check_aiokafka_internals()
    app.transport = LeanTransport(
        app.conf.broker_consumer,
        app,
        progress=progress or Progress(),
        commit_deadline_s=commit_deadline_s,
        hold_messages=hold_messages,
        fetch_max_wait_ms=fetch_max_wait_ms,
        direct_topics=direct_topics,
    )
