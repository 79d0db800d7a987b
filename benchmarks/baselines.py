"""The two reference consumers the stream benchmark compares the worker with.

Both read the same input topics as the worker, in a consumer group of their own, and do no
work of ours, so their rates are the ceilings the worker is measured against:

- ``faust-take``: a bare Faust agent over the input topics, taking batches with
  ``stream.take_events(batch_size, within=0.05)`` like the worker, and only counting them
  (Faust's own per-event cost, acks and commits included), with the worker's Faust settings
  on asyncio's event loop and Faust's consumer; with ``--lean``, on the worker's uvloop,
  :class:`~segstream.stream.worker.consumer.LeanConsumer` and garbage-collector tuning (so the
  worker's ratio to it is the cost of the work itself);
- ``aiokafka``: a raw aiokafka loop: ``getmany`` up to ``batch_size`` records, send each one
  to a sink topic, wait for the acknowledgements, commit (a consume -> produce pipeline
  without Faust);
- ``local-state``: the same loop, but each record is decoded and counted into its user's
  counters in a Python dict (:class:`LocalCounters`), and what is sent is the user's counters
  after it: the worker's shape of work with its state in the process instead of Redis, so
  the worker's distance to it is the cost of external state (and of the model and fencing).

Run as ``python -m benchmarks.baselines faust-take [--lean] | aiokafka | local-state`` with the
worker's
``SEGSTREAM_*`` environment (``SEGSTREAM_APP_ID`` names the group); each runs until stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import msgspec

from segstream.settings import Settings, load_settings
from segstream.stream.clients.kafka import consumer as kafka_consumer
from segstream.stream.clients.kafka import producer as kafka_producer

__all__ = ["LocalCounters", "main", "run_aiokafka_loop", "run_faust_take"]


class LocalCounters:
    """Per-user counters kept in a dict, as a stream processor with local state keeps them.

    Per user: profile updates, orders, order items and the sum of their sale prices (in the
    events' currency). Keys are the records' keys (a user's id in decimal, as the worker's
    inputs are keyed); a record whose value is not a JSON object is counted in ``rejected``
    and changes no user.
    """

    def __init__(self) -> None:
        self.users: dict[bytes, list[float]] = {}
        self.rejected = 0
        self._decode = msgspec.json.Decoder()
        self._encode = msgspec.json.Encoder()

    def count(self, key: bytes | None, value: bytes | None, *, order: bool) -> bytes | None:
        """Count one record (``order``: from the orders topic, else a profile) into its
        user's counters; returns the user's counters after it as JSON (profiles, orders,
        items, spend), or ``None`` for a rejected record."""
        try:
            document = self._decode.decode(value or b"")
        except msgspec.DecodeError:
            document = None
        if not isinstance(document, dict) or key is None:
            self.rejected += 1
            return None
        counters = self.users.get(key)
        if counters is None:
            counters = self.users[key] = [0, 0, 0, 0.0]
        if order:
            items = document.get("items") or ()
            counters[1] += 1
            counters[2] += len(items)
            counters[3] += sum(float(item.get("sale_price") or 0.0) for item in items)
        else:
            counters[0] += 1
        return self._encode.encode(counters)


def run_faust_take(settings: Settings, *, lean: bool = False) -> int:
    """A bare Faust agent over the input topics, counting batches; runs until stopped.

    ``lean``: on the worker's event loop and consumer rather than Faust's defaults.
    """
    import faust

    from segstream.stream.worker.app import (
        base_app,
        input_channel,
        quiet_framework_loggers,
        trim_framework,
        tune_gc,
    )
    from segstream.stream.worker.consumer import use_lean_consumer
    from segstream.stream.worker.run import use_worker_event_loop

    if lean:
        use_worker_event_loop()
    app = base_app(settings, settings.data_dir / "faust-baseline")
    if lean:
        use_lean_consumer(app)
    inputs = input_channel(app, settings)
    seen = [0]

    @app.agent(inputs)
    async def count(stream: faust.StreamT) -> None:
        trim_framework(app)  # the same framework set-up as the worker's
        if lean:
            tune_gc()
        async for events in stream.take_events(settings.batch_size, within=0.05):
            seen[0] += len(events)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    quiet_framework_loggers()
    with contextlib.suppress(SystemExit):
        worker.execute_from_commandline()
    return 0


async def run_aiokafka_loop(
    settings: Settings,
    sink: str,
    *,
    local_state: bool = False,
    stop: asyncio.Event | None = None,
    counters: LocalCounters | None = None,
) -> None:
    """Consume the input topics, produce every record to ``sink``, commit; until SIGTERM or
    SIGINT (or ``stop`` is set, when given: the signals are then left alone).

    ``local_state``: count each record into ``counters`` (a new :class:`LocalCounters` if
    ``None``) and send its user's counters instead of the record's value.
    """
    if local_state and counters is None:
        counters = LocalCounters()
    if not local_state:
        counters = None
    consumer = kafka_consumer(
        settings,
        settings.topic_users,
        settings.topic_orders,
        group_id=settings.app_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
    )
    producer = kafka_producer(settings, acks="all")
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50, max_records=settings.batch_size)
            if counters is None:
                futures = [
                    await producer.send(sink, record.value, key=record.key)
                    for records in batches.values()
                    for record in records
                ]
            else:
                futures = []
                for tp, records in batches.items():
                    order = tp.topic == settings.topic_orders
                    for record in records:
                        out = counters.count(record.key, record.value, order=order)
                        if out is not None:
                            futures.append(await producer.send(sink, out, key=record.key))
            if futures:
                await asyncio.gather(*futures)
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.baselines faust-take [--lean] | aiokafka | local-state --sink T``."""
    parser = argparse.ArgumentParser(prog="benchmarks.baselines")
    parser.add_argument("kind", choices=("faust-take", "aiokafka", "local-state"))
    parser.add_argument("--sink", help="topic the aiokafka and local-state loops produce to")
    parser.add_argument(
        "--lean", action="store_true", help="faust-take on the worker's event loop and consumer"
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.kind == "faust-take":
        return run_faust_take(settings, lean=args.lean)
    if not args.sink:
        parser.error(f"{args.kind} needs --sink")
    asyncio.run(run_aiokafka_loop(settings, args.sink, local_state=args.kind == "local-state"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
