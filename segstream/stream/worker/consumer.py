"""Faust's Kafka consumer with a cheaper hand-over of each fetched message to the agents.

Faust's consumer reads records in a loop (``Consumer._drain_messages``) and hands each one to
its topic conductor. It does so through ``Service.wait_first(callback(message),
suspend_flow.wait())``: four asyncio tasks and an ``asyncio.wait`` per message, so that a
hand-over blocked by a full stream buffer can be abandoned when a rebalance suspends the flow.
On this project's 2-core reference machine that bookkeeping alone cost 25-50 us of the
worker's ~130 us of CPU per event, more than the worker's own work on the event.

:class:`LeanConsumer` keeps Faust's loop and everything it guarantees (offsets read twice are
skipped, gaps in acked topics are recorded, commits every ``broker_commit_every`` acks, the
loop yields to the event loop regularly) but awaits the conductor's callback directly while
the flow is active, and stops handing messages over as soon as it is suspended. A hand-over
still blocked when a rebalance happens completes once the buffer has room; Faust's stream
then drops that message, because it carries the previous consumer generation
(``faust.Stream`` skips an event whose ``generation_id`` is not the current one), and the
partition's new owner reads it from the committed offset. Nothing is acked that was not
processed, so "at least once, exactly once in effect" (the Redis fences) is unchanged.

Install it with :func:`use_lean_consumer` on an app before the app starts.
"""

from __future__ import annotations

import asyncio
from typing import cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service, ServiceT

__all__ = ["LeanConsumer", "LeanTransport", "use_lean_consumer"]

YIELD_EVERY = 100
"""Messages handed over between two explicit yields to the event loop (as Faust does)."""


class LeanConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, minus the per-message tasks (see the module docstring)."""

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        callback = self.callback
        read_offset = self._read_offset
        suspended = self.suspend_flow.is_set
        consumer_stopped = cast(Service, self)._stopped.is_set
        fetcher_stopped = cast(Service, fetcher)._stopped.is_set
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        since_yield = 0
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=1.0)
                await asyncio.sleep(0)  # getmany may return at once, again and again
                if self.should_stop:
                    continue
                async for tp, message in records:
                    if suspended() or consumer_stopped():
                        break  # rebalancing or stopping: Faust seeks back afterwards
                    since_yield += 1
                    if since_yield >= YIELD_EVERY:
                        since_yield = 0
                        await asyncio.sleep(0)
                    offset = message.offset
                    last = read_offset[tp]
                    if last is not None and offset < last:
                        continue  # read before this seek: Faust drops it too
                    if last and offset - last > 1 and acks_enabled_for(message.topic):
                        # Offsets skipped by the broker (control records, compaction) are
                        # marked acked, or the commit would stop at them forever.
                        await self._add_gap(tp, last + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    await callback(message)
                    read_offset[tp] = offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class LeanTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`LeanConsumer` as its consumer."""

    Consumer = LeanConsumer


def use_lean_consumer(app: faust.App) -> None:
    """Make ``app`` consume with :class:`LeanConsumer`; call before the app starts."""
    app.transport = LeanTransport(app.conf.broker_consumer, app)
