"""The pieces of Faust's private consumer state the worker's fetcher and commits touch.

Faust's consumer keeps, per partition, the offset of the last message handed over (its "read
offset") and the ranges of offsets the broker never returned (its "gaps": control records,
compacted records). Both are Faust's own bookkeeping: ``Consumer.seek``,
``Consumer.perform_seek`` and a revocation reset the read offsets, and the commit
(``Consumer._new_offset``) counts a gap as acked, so that an offset the broker skipped does not
hold the commit back for ever. A fetcher has to keep both exactly as Faust's does, and
faust-streaming offers no public way to: there is no public accessor of the read offsets and
no public method that records a gap. So :class:`~segstream.stream.worker.fetcher.LeanFetcher`
reaches them through this module, and nowhere else:

- :func:`read_offsets`: ``Consumer._read_offset`` (a mapping, read and written per message);
- :func:`record_gap`: ``Consumer._add_gap(tp, offset_from, offset_to)`` (a coroutine);
- :func:`commit_floor` and :func:`give_back_acks`: the last offset Faust recorded as committed
  (``Consumer._committed_offset``) and its list and index of acked offsets (``_acked``,
  ``_acked_index``), for :class:`~segstream.stream.worker.consumer.LeanConsumer`'s commit,
  which gives back the acks a commit took and did not commit.

Both are data access, not overrides: if Faust renames them, :func:`check_faust_internals`
refuses to start the worker with a message saying so (and the unit test
``tests/unit/stream/worker/test_faust_internals.py`` fails first), instead of a fetch loop that
silently stops being called.

It also checks the private hooks the worker overrides, which a rename would silently stop
calling: Faust's ``Consumer._commit_tps(tps, start_new_transaction)`` (the consumer's
commit), ``Consumer._new_consumer_thread()`` and
``AIOKafkaConsumerThread._create_worker_consumer(transport)``
(:mod:`~segstream.stream.worker.consumer`'s fetch wait), and mode's (faust-streaming's
service framework, mode-streaming) ``Worker._on_sigterm()`` / ``_on_sigint()``
(:mod:`~segstream.stream.worker.run`'s bounded stop) and ``Worker._sentinel_task()`` (the
last wait of its stop).
"""

from __future__ import annotations

import inspect
from collections.abc import MutableMapping
from importlib import metadata
from typing import Any, cast

from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode import Worker as ModeWorker

from segstream.errors import ConfigError

__all__ = [
    "check_faust_internals",
    "commit_floor",
    "give_back_acks",
    "read_offsets",
    "record_gap",
]

_ACK_STATE = ("_acked", "_acked_index", "_committed_offset")
"""The consumer's ack bookkeeping, per partition (set in ``Consumer.__init__``)."""

_GAP_PARAMETERS = ["self", "tp", "offset_from", "offset_to"]


def check_faust_internals() -> None:
    """Refuse to run on a Faust whose consumer lacks the state :mod:`this module <.>` reads.

    Raises:
        ConfigError: ``Consumer._read_offset`` or ``Consumer._add_gap(tp, offset_from,
            offset_to)`` is gone or changed; names the installed faust-streaming version.
    """
    problems = []
    if "_read_offset" not in getattr(FaustConsumer, "__annotations__", {}):
        problems.append("Consumer._read_offset is gone")
    add_gap = getattr(FaustConsumer, "_add_gap", None)
    if add_gap is None or not inspect.iscoroutinefunction(add_gap):
        problems.append("Consumer._add_gap is gone or no longer a coroutine")
    elif (parameters := list(inspect.signature(add_gap).parameters)) != _GAP_PARAMETERS:
        problems.append(
            f"Consumer._add_gap({', '.join(parameters)}) changed "
            f"(expected ({', '.join(_GAP_PARAMETERS)}))"
        )
    missing = [name for name in _ACK_STATE if name not in FaustConsumer.__annotations__]
    if missing:
        problems.append(f"Consumer.{', '.join(missing)} gone")
    problems += _hook_problems()
    if problems:
        version = metadata.version("faust-streaming")
        mode_version = metadata.version("mode-streaming")
        raise ConfigError(
            f"faust-streaming {version} (mode-streaming {mode_version}) is not supported by "
            "the worker's fetcher: "
            f"{'; '.join(problems)}. The worker is written against faust-streaming 0.15: "
            "install that version, or port segstream/stream/worker/faust_internals.py"
        )


_HOOKS: tuple[tuple[type, str, list[str]], ...] = (
    (FaustConsumer, "_commit_tps", ["self", "tps", "start_new_transaction"]),
    (FaustConsumer, "_filter_committable_offsets", ["self", "tps"]),
    (FaustConsumer, "_handle_attached", ["self", "commit_offsets"]),
    (FaustConsumer, "_commit_offsets", ["self", "offsets", "start_new_transaction"]),
    (faust_aiokafka.Consumer, "_new_consumer_thread", ["self"]),
    (faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer", ["self", "transport"]),
    (ModeWorker, "_on_sigterm", ["self"]),
    (ModeWorker, "_on_sigint", ["self"]),
    (ModeWorker, "_sentinel_task", ["self"]),
)
"""(class, method, its parameters) of every private hook the worker overrides."""


def _hook_problems() -> list[str]:
    problems = []
    for owner, name, expected in _HOOKS:
        hook = getattr(owner, name, None)
        if hook is None:
            problems.append(f"{owner.__name__}.{name} is gone")
        elif (parameters := list(inspect.signature(hook).parameters)) != expected:
            problems.append(
                f"{owner.__name__}.{name}({', '.join(parameters)}) changed "
                f"(expected ({', '.join(expected)}))"
            )
    return problems


def read_offsets(consumer: Any) -> MutableMapping[TP, int | None]:
    """Faust's per-partition offset of the last message handed over (``None``: none yet).

    The mapping itself, shared with Faust (which resets it on a seek or a revocation); read
    it before handing a message over, write the message's offset after.
    """
    return cast(MutableMapping[TP, "int | None"], consumer._read_offset)


async def record_gap(consumer: Any, tp: TP, offset_from: int, offset_to: int) -> None:
    """Tell Faust's commit that offsets ``offset_from``..``offset_to`` of ``tp`` were skipped.

    The broker returned no record for them (control records, compaction), so none will ever
    be acked; recorded, the commit counts them as acked instead of stopping before them.
    """
    await consumer._add_gap(tp, offset_from, offset_to)


def commit_floor(consumer: Any, tp: TP) -> int | None:
    """Where the next commit of ``tp`` starts: the offset Faust last recorded as committed
    (the next one to process), else the lowest acked offset; ``None`` if neither is known."""
    committed = cast("int | None", consumer._committed_offset[tp])
    if committed is not None:
        return committed
    acked = cast(list[int], consumer._acked[tp])
    return min(acked) if acked else None


def give_back_acks(consumer: Any, tp: TP, offsets: range) -> None:
    """Put ``offsets`` of ``tp`` back among its acked offsets (those not there already).

    Faust's commit takes the offsets it commits out of the ack list before the request is
    sent; if the commit does not finish, they go back, so the next commit covers them.
    """
    acked = cast(list[int], consumer._acked[tp])
    index = cast(set[int], consumer._acked_index[tp])
    missing = [offset for offset in offsets if offset not in index]
    if missing:
        index.update(missing)
        acked.extend(missing)
        acked.sort()
