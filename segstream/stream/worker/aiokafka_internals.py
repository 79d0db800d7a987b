"""The one piece of aiokafka's private state the worker touches: the consumer's fetch wait.

Faust builds its aiokafka consumer with a fixed ``fetch_max_wait_ms`` of 1,500 ms and offers no
setting for it (:mod:`~segstream.stream.worker.consumer`, "Fetch wait", says why the worker
needs another). aiokafka keeps the value given to ``AIOKafkaConsumer(...)`` in
``AIOKafkaConsumer._fetch_max_wait_ms`` and reads it when the consumer starts (it builds its
Fetcher then), so setting that attribute between construction and start takes effect. It is
set through :func:`set_fetch_max_wait` and nowhere else; if aiokafka stops keeping or reading
it, :func:`check_aiokafka_internals` refuses to start the worker (a
:class:`~segstream.errors.ConfigError` naming the installed aiokafka version) instead of a
setting that silently stops working, and ``tests/unit/stream/worker/test_aiokafka_internals.py``
fails first.
"""

from __future__ import annotations

import functools
import inspect
from importlib import metadata

from aiokafka import AIOKafkaConsumer

from segstream.errors import ConfigError

__all__ = ["check_aiokafka_internals", "set_fetch_max_wait"]

_ATTRIBUTE = "_fetch_max_wait_ms"


def _problems() -> list[str]:
    problems = []
    if f"self.{_ATTRIBUTE} = fetch_max_wait_ms" not in inspect.getsource(AIOKafkaConsumer):
        problems.append(f"AIOKafkaConsumer.__init__ no longer keeps {_ATTRIBUTE}")
    if f"fetch_max_wait_ms=self.{_ATTRIBUTE}" not in inspect.getsource(AIOKafkaConsumer.start):
        problems.append(f"AIOKafkaConsumer.start no longer reads {_ATTRIBUTE}")
    return problems


@functools.cache
def check_aiokafka_internals() -> None:
    """Refuse to run on an aiokafka whose consumer no longer keeps and reads the fetch wait
    where :func:`set_fetch_max_wait` sets it (checked once per process).

    Raises:
        ConfigError: names the installed aiokafka version and what changed.
    """
    problems = _problems()
    if problems:
        version = metadata.version("aiokafka")
        raise ConfigError(
            f"aiokafka {version} is not supported by the worker's consumer: "
            f"{'; '.join(problems)}, so SEGSTREAM_FETCH_MAX_WAIT_MS would be ignored. The "
            "worker is written against aiokafka 0.14 (pyproject.toml): install it, or port "
            "segstream/stream/worker/aiokafka_internals.py"
        )


def set_fetch_max_wait(consumer: AIOKafkaConsumer, milliseconds: int) -> None:
    """Make ``consumer`` (built, not started) long-poll for ``milliseconds`` per fetch."""
    setattr(consumer, _ATTRIBUTE, milliseconds)
