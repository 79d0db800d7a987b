"""Publishing a batch's outputs and waiting until the broker has acknowledged every one.

:func:`publish` is what makes the worker's output lossless: it returns only when each record
is acknowledged (``acks=all`` on the producer), re-sending from the first failure on, in the
original order, so per-user order survives a retry (the re-sent changes carry their original
event_id; consumers of ``segment-changes`` deduplicate on it, and ``user-segments`` is
idempotent by key). Only then does the worker clear the outbox and let the consumer commit.

A :class:`Sender` adapts a producer: Faust's (the worker) or aiokafka's (replay, benchmarks).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from segstream.stream.changes import Output
from segstream.stream.retry import KAFKA_TRANSIENT, backoff_delays

__all__ = ["AiokafkaSender", "FaustSender", "Sender", "publish"]

log = logging.getLogger(__name__)


class Sender(Protocol):
    """Something that schedules one record and hands back its acknowledgement future."""

    async def send(self, output: Output) -> Awaitable[Any]:
        """Queue ``output``; the awaitable resolves when the broker acknowledged it."""
        ...


class FaustSender:
    """Sends through a started Faust app's producer (aiokafka underneath)."""

    def __init__(self, producer: Any) -> None:
        """``producer`` is ``app.producer`` of a running faust.App."""
        self.producer = producer

    async def send(self, output: Output) -> Awaitable[Any]:
        """Queue ``output`` on the app's producer."""
        return await self.producer.send(
            output.topic, output.key, output.value, None, None, list(output.headers) or None
        )


class AiokafkaSender:
    """Sends through a started :class:`aiokafka.AIOKafkaProducer`."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def send(self, output: Output) -> Awaitable[Any]:
        """Queue ``output`` on the producer."""
        return await self.producer.send(
            output.topic, output.value, key=output.key, headers=list(output.headers) or None
        )


async def publish(
    sender: Sender,
    outputs: Sequence[Output],
    *,
    first_delay_s: float = 0.1,
    max_delay_s: float = 5.0,
) -> None:
    """Send ``outputs`` in order and wait until all are acknowledged; retry without limit.

    A broker error (:data:`~segstream.stream.retry.KAFKA_TRANSIENT`) re-sends, after a
    backoff, every output from the first unacknowledged one on. Any other error propagates.
    """
    pending = list(outputs)
    delay = backoff_delays(first_delay_s, max_delay_s)
    failures = 0
    while pending:
        first_failed, error = await _send_all(sender, pending)
        if error is None:
            return
        failures += 1
        level = logging.WARNING if failures < 10 else logging.ERROR
        log.log(
            level,
            "publishing %d records failed (%r); re-sending %d in %.2f s",
            len(pending),
            error,
            len(pending) - first_failed,
            delay(failures),
        )
        pending = pending[first_failed:]
        await asyncio.sleep(delay(failures))


async def _send_all(sender: Sender, outputs: Sequence[Output]) -> tuple[int, BaseException | None]:
    """Send and await all; returns (index of the first failure, its error) or (len, None)."""
    futures: list[Awaitable[Any]] = []
    send_error: BaseException | None = None
    for output in outputs:
        try:
            futures.append(await sender.send(output))
        except KAFKA_TRANSIENT as exc:
            send_error = exc
            break
    results = await asyncio.gather(*futures, return_exceptions=True)
    for index, result in enumerate(results):
        if isinstance(result, BaseException):
            if not isinstance(result, KAFKA_TRANSIENT):
                raise result
            return index, result
    if send_error is not None:
        return len(futures), send_error
    return len(outputs), None
