"""Faust's Kafka transport for the worker: a lean fetcher, and commits that cannot hang it.

:class:`LeanTransport` is Faust's aiokafka transport with two of the classes a transport names
replaced, both through the attributes Faust reads them from (``Transport.Consumer`` and
``Transport.Fetcher``), neither overriding a private method:

- ``Fetcher`` is :class:`~segstream.stream.worker.fetcher.LeanFetcher`: Faust's fetch loop
  without Faust's per-message tasks, with Faust's suspension semantics, and with one reference
  per message held for the worker (``hold_messages``); see its module;
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

Nothing is acked that was not processed, so "at least once, exactly once in effect" (the Redis
fences) holds. Install it with :func:`use_lean_consumer` before the app starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import Message

from segstream.stream.clients.retry import describe
from segstream.stream.worker.faust_internals import check_faust_internals
from segstream.stream.worker.fetcher import LeanFetcher
from segstream.stream.worker.watchdog import Progress

__all__ = ["LeanConsumer", "LeanTransport", "use_lean_consumer"]

log = logging.getLogger(__name__)


class LeanConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with deadline-bound, background commits (module docstring)."""

    _background_commit: asyncio.Future[bool] | None = None
    _acks_since_commit: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._commit_every_acks: int | None = self.app.conf.broker_commit_every
        """Acks between two background commits (Faust's ``broker_commit_every``)."""

    @property
    def _lean(self) -> LeanTransport:
        return cast(LeanTransport, self.transport)

    def ack(self, message: Message) -> bool:
        """Faust's ack; every ``broker_commit_every`` acks also start a background commit."""
        if not super().ack(message):
            return False
        self._acks_since_commit += 1
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
        return True

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
            committed = await asyncio.wait_for(
                super().commit(topics, start_new_transaction=start_new_transaction), deadline
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

    def _start_commit(self) -> None:
        """Commit in the background unless a commit started here is still running."""
        running = self._background_commit
        if running is None or running.done():
            self._background_commit = asyncio.ensure_future(
                self._commit_within_deadline(None, True)
            )
            self._background_commit.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future[bool]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background offset commit failed: %s", describe(task.exception()))


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
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress
        """Where the consumer records its commits' outcomes (read by the watchdog)."""
        self.commit_deadline_s = commit_deadline_s
        """Seconds after which a commit is abandoned."""
        self.hold_messages = hold_messages
        """Hand each message over with one more reference, released by the worker."""


def use_lean_consumer(
    app: faust.App,
    *,
    progress: Progress | None = None,
    commit_deadline_s: float = 30.0,
    hold_messages: bool = False,
) -> None:
    """Make ``app`` consume through :class:`LeanTransport`; call before the app starts.

    Args:
        progress: records commit outcomes (for a watchdog); a private one if ``None``.
        commit_deadline_s: a commit still running after this many seconds is abandoned.
        hold_messages: hold one reference on every message for the agent, which must release
            it (``stream.ack(event)``) once the event is processed; see
            :mod:`~segstream.stream.worker.fetcher`.

    Raises:
        ConfigError: the installed faust-streaming lacks the consumer state the fetcher
            reads (:func:`~segstream.stream.worker.faust_internals.check_faust_internals`).
    """
    check_faust_internals()
    app.transport = LeanTransport(
        app.conf.broker_consumer,
        app,
        progress=progress or Progress(),
        commit_deadline_s=commit_deadline_s,
        hold_messages=hold_messages,
    )
