"""How every segstream process logs: one format, segstream's level, the framework kept quiet.

:func:`configure_logging` is called once at start-up by the ``segstream`` command (every verb,
the worker included) and by the module-level Faust app (``faust -A segstream.stream.main:app``);
:func:`faust_logging_config` is the same configuration as Faust's worker applies it when it
sets up logging itself. Third-party loggers stay at WARNING; ``SEGSTREAM_LOG_LEVEL`` applies to
the ``segstream`` loggers only.

A dependency that is down makes its client log the same error many times a second (aiokafka,
while a broker restarts: about 130 lines/s); :class:`RepeatSummary` lets the first of such a
run through per window and counts the rest, so the worker's own lines stay readable.
Library records that are routine and retried, yet logged at ERROR, are logged one level lower
(:class:`Demote`; the list: :data:`IDLE_FETCH_MESSAGES`, :data:`COORDINATOR_MESSAGES`), so
that ERROR keeps meaning that something needs looking at.
"""

from __future__ import annotations

import atexit
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "LOG_DATE_FORMAT",
    "LOG_FORMAT",
    "Demote",
    "RepeatSummary",
    "configure_logging",
    "faust_logging_config",
    "flush_summaries",
]

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The one line format of every record: time, level, logger, message."""
LOG_DATE_FORMAT: Final = "%Y-%m-%d %H:%M:%S"

IDLE_FETCH_LOGGER: Final = "faust.transport.drivers.aiokafka"
"""The logger of Faust's aiokafka driver, which reports partitions it has not fetched yet."""
IDLE_FETCH_MESSAGES: Final = ("has not sent fetch request",)
"""Parts of that logger's messages that are routine, not errors: after every rebalance, Faust
checks each newly assigned partition and logs at ERROR when no fetch was sent for it "since
start", which on an idle partition (nothing to fetch) is the normal case."""

COORDINATOR_LOGGER: Final = "aiokafka.consumer.group_coordinator"
"""The logger of aiokafka's consumer group coordinator."""
COORDINATOR_MESSAGES: Final = (
    "GroupLoadInProgressError",
    "GroupCoordinatorNotAvailableError",
    "NotCoordinatorForGroupError",
)
"""Errors that logger reports at ERROR on a failed coordinator look-up and then retries: the
group's coordinator still loading or moving (a fresh broker creating its offsets topic, a
restarted broker, a failover). Routine unless they last, so WARNING, as Kafka's Java client
treats them; its other look-up failures (authorisation, an unreachable cluster) stay errors."""


class Demote(logging.Filter):
    """Re-levels records whose message contains one of ``fragments`` to ``level``.

    Attached to one logger (a logger's filters see only its own records), so that logger's
    other errors stay errors. A demoted record is kept only if its logger is enabled for
    ``level``, as if it had been logged at that level in the first place.
    """

    def __init__(self, fragments: tuple[str, ...], level: int = logging.DEBUG) -> None:
        super().__init__()
        self.fragments = fragments
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a matching record that ``level`` would not show; True otherwise."""
        message = record.getMessage()
        if not any(fragment in message for fragment in self.fragments) or (
            record.levelno <= self.level
        ):
            return True
        record.levelno, record.levelname = self.level, logging.getLevelName(self.level)
        return logging.getLogger(record.name).isEnabledFor(self.level)


REPEAT_WINDOW_S: Final = 30.0
"""How long a third-party message, once logged, is held back when it comes again (seconds)."""

_MAX_RUNS: Final = 1024
"""Runs remembered before the expired ones are forgotten."""


SWEEP_INTERVAL_S: Final = 1.0
"""How often, at most, the filter looks for ended runs whose count is still unsaid (seconds)."""

SUMMARY_ATTRIBUTE: Final = "segstream_repeat_summary"
"""Set on the records :class:`RepeatSummary` emits itself, which its filter lets through."""


@dataclass
class _Run:
    since: float
    """When the record that opened the window passed (the filter's clock, seconds)."""
    held: int = 0
    """Alike records held back since then."""
    last: logging.LogRecord | None = None
    """The last of them, which a summary shows with the count."""


class RepeatSummary(logging.Filter):
    """Lets one of a run of alike third-party records through per window; holds back the rest.

    Alike: the same logger, level and message template (``record.msg`` before its arguments),
    so "Unable connect to node with id 1: ..." repeated for every retry is one run whatever
    its arguments. The first alike record after ``window_s`` passes and says how many were
    held back before it, so a lasting outage shows as one line per message per window, with
    its count. A run that stops within its window loses no count either: once its window
    has ended, the last record held back is logged again with the count, at the next record
    of any logger (looked for at most once per :data:`SWEEP_INTERVAL_S`), and
    :meth:`flush` (called at exit) says every count still unsaid. Records of ``exempt``
    loggers (segstream's own, which log each state change once) always pass. Meant for a
    handler, where it sees the records of every logger.
    """

    def __init__(
        self,
        window_s: float = REPEAT_WINDOW_S,
        exempt: tuple[str, ...] = ("segstream",),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.exempt = exempt
        self.clock = clock
        self._runs: dict[tuple[str, int, str], _Run] = {}
        self._swept = clock()
        self._emitting = False
        _LIVE.add(self)

    def _exempt(self, name: str) -> bool:
        return any(name == e or name.startswith(e + ".") for e in self.exempt)

    def filter(self, record: logging.LogRecord) -> bool:
        """True for a record to show (the first of its run in this window)."""
        if getattr(record, SUMMARY_ATTRIBUTE, False):
            return True
        now = self.clock()
        show = self._judge(record, now)
        if now - self._swept >= SWEEP_INTERVAL_S and not self._emitting:
            self._swept = now
            self._summarise(lambda run: now - run.since >= self.window_s)
        return show

    def _judge(self, record: logging.LogRecord, now: float) -> bool:
        if self._exempt(record.name):
            return True
        key = (record.name, record.levelno, str(record.msg))
        run = self._runs.get(key)
        if run is not None and now - run.since < self.window_s:
            run.held += 1
            run.last = record
            return False
        if len(self._runs) >= _MAX_RUNS:
            # Messages formatted before logging (f-strings) make a key each: keep the live ones.
            self._runs = {k: r for k, r in self._runs.items() if now - r.since < self.window_s}
        self._runs[key] = _Run(now)
        if run is not None and run.held:
            # No "%" in the note: the message is still %-formatted with its arguments.
            window = f"{self.window_s:g}"
            note = f" [{run.held} more like this held back in the {window} s before]"
            record.msg = str(record.msg) + note
        return True

    def flush(self) -> None:
        """Log the count of every run that held records back since its last line showed."""
        self._summarise(lambda run: True)

    def _summarise(self, due: Callable[[_Run], bool]) -> None:
        """Log each due run's last held record again with its count; the run is then done."""
        for key, run in list(self._runs.items()):
            if not run.held or run.last is None or not due(run):
                continue
            del self._runs[key]
            last = run.last
            summary = logging.makeLogRecord(last.__dict__)
            summary.msg = f"{last.msg} [last of {run.held} like this held back after the one shown]"
            setattr(summary, SUMMARY_ATTRIBUTE, True)
            # Through its own logger: whichever handlers show that logger show the summary.
            self._emitting = True
            try:
                logging.getLogger(last.name).handle(summary)
            finally:
                self._emitting = False


_LIVE: weakref.WeakSet[RepeatSummary] = weakref.WeakSet()
"""Every summary filter in use, flushed when the interpreter exits."""


@atexit.register
def flush_summaries() -> None:
    """Log every count of held-back records still unsaid (:meth:`RepeatSummary.flush`).

    Runs at interpreter exit, before logging's own exit hook (registered earlier, so run
    later) closes the handlers; a process that ends with :func:`os._exit` calls it first.
    """
    # A handler's stream may be closed by now (a test runner's capture): as logging's own
    # shutdown does, such errors are not reported while the process ends.
    raising, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        for summary in list(_LIVE):
            summary.flush()
    finally:
        logging.raiseExceptions = raising


def _level(level: str | int) -> int:
    """``"debug"``, ``"DEBUG"`` or ``logging.DEBUG`` -> ``logging.DEBUG``."""
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"not a log level: {level!r}")
    return number


_DEMOTIONS: Final = (
    (IDLE_FETCH_LOGGER, IDLE_FETCH_MESSAGES, logging.DEBUG),
    (COORDINATOR_LOGGER, COORDINATOR_MESSAGES, logging.WARNING),
)
"""(logger, message fragments, the level its matching records are logged at instead)."""


def _demote_routine_errors() -> None:
    for name, fragments, level in _DEMOTIONS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, Demote) and f.fragments == fragments for f in logger.filters):
            logger.addFilter(Demote(fragments, level))


def configure_logging(level: str | int) -> None:
    """One stderr handler in :data:`LOG_FORMAT` on the root logger (replacing any), root at
    WARNING, the ``segstream`` loggers at ``level`` (any case), Faust's idle-fetch reports
    demoted to DEBUG and aiokafka's retried coordinator look-ups to WARNING, repeated
    third-party records summarised (:class:`RepeatSummary`). Idempotent."""
    logging.basicConfig(
        level=logging.WARNING, format=LOG_FORMAT, datefmt=LOG_DATE_FORMAT, force=True
    )
    logging.getLogger("segstream").setLevel(_level(level))
    _demote_routine_errors()
    for handler in logging.getLogger().handlers:
        handler.addFilter(RepeatSummary())


def faust_logging_config(level: str | int) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` document for Faust's worker (``app.conf
    .logging_config``, which Faust applies when its worker starts, in place of its own): the
    :func:`configure_logging` setup, so that Faust's records and ours share one format.

    The root logger's level is left as it is (WARNING unless something set it).
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"segstream": {"format": LOG_FORMAT, "datefmt": LOG_DATE_FORMAT}},
        "filters": {
            "idle_fetch": {"()": Demote, "fragments": IDLE_FETCH_MESSAGES},
            "coordinator": {
                "()": Demote,
                "fragments": COORDINATOR_MESSAGES,
                "level": logging.WARNING,
            },
            "repeats": {"()": RepeatSummary},
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "segstream",
                "stream": "ext://sys.stderr",
                "filters": ["repeats"],
            }
        },
        "root": {"handlers": ["default"]},
        "loggers": {
            "segstream": {"level": logging.getLevelName(_level(level))},
            IDLE_FETCH_LOGGER: {"filters": ["idle_fetch"]},
            COORDINATOR_LOGGER: {"filters": ["coordinator"]},
        },
    }
