"""How every segstream process logs: one format, segstream's level, the framework kept quiet.

:func:`configure_logging` is called once at start-up by the ``segstream`` command (every verb,
the worker included) and by the module-level Faust app (``faust -A segstream.stream.main:app``);
:func:`faust_logging_config` is the same configuration as Faust's worker applies it when it
sets up logging itself. Third-party loggers stay at WARNING; ``SEGSTREAM_LOG_LEVEL`` applies to
the ``segstream`` loggers only.
"""

from __future__ import annotations

import logging
from typing import Any, Final

__all__ = [
    "LOG_DATE_FORMAT",
    "LOG_FORMAT",
    "DemoteToDebug",
    "configure_logging",
    "faust_logging_config",
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


class DemoteToDebug(logging.Filter):
    """Re-levels records whose message contains one of ``fragments`` to DEBUG.

    Attached to one logger (a logger's filters see only its own records), so that logger's
    other errors stay errors. A demoted record is kept only if its logger is enabled for
    DEBUG, as if it had been logged at DEBUG in the first place.
    """

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a matching record that DEBUG would not show; True otherwise."""
        message = record.getMessage()
        if not any(fragment in message for fragment in self.fragments):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _level(level: str | int) -> int:
    """``"debug"``, ``"DEBUG"`` or ``logging.DEBUG`` -> ``logging.DEBUG``."""
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"not a log level: {level!r}")
    return number


def _demote_idle_fetch_errors() -> None:
    logger = logging.getLogger(IDLE_FETCH_LOGGER)
    if not any(isinstance(f, DemoteToDebug) for f in logger.filters):
        logger.addFilter(DemoteToDebug(IDLE_FETCH_MESSAGES))


def configure_logging(level: str | int) -> None:
    """One stderr handler in :data:`LOG_FORMAT` on the root logger (replacing any), root at
    WARNING, the ``segstream`` loggers at ``level`` (any case), Faust's idle-fetch reports
    demoted to DEBUG. Idempotent."""
    logging.basicConfig(
        level=logging.WARNING, format=LOG_FORMAT, datefmt=LOG_DATE_FORMAT, force=True
    )
    logging.getLogger("segstream").setLevel(_level(level))
    _demote_idle_fetch_errors()


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
        "filters": {"idle_fetch": {"()": DemoteToDebug, "fragments": IDLE_FETCH_MESSAGES}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "segstream",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["default"]},
        "loggers": {
            "segstream": {"level": logging.getLevelName(_level(level))},
            IDLE_FETCH_LOGGER: {"filters": ["idle_fetch"]},
        },
    }
