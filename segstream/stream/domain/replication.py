"""How many copies of each topic the cluster keeps, and how many must acknowledge a write.

With ``replication_factor`` copies and ``min.insync.replicas`` = ``replication_factor - 1``
(at least 1), a producer with ``acks=all`` gets an acknowledgement only once that many
replicas have the record, so losing any one broker loses no acknowledged record, and with
three copies writes go on while one broker is down.
"""

from __future__ import annotations

from segstream.errors import ConfigError
from segstream.settings import Settings

__all__ = ["default_replication_factor", "min_insync_replicas", "replication_factor"]

_MOST_COPIES = 3
"""Kafka's usual production replication factor: survives one broker down plus one lost."""


def default_replication_factor(brokers: int) -> int:
    """``min(3, brokers)``: the replicas a topic gets when no setting says otherwise.

    Raises:
        ConfigError: ``brokers`` < 1 (the cluster described no broker).
    """
    if brokers < 1:
        raise ConfigError(f"the Kafka cluster described {brokers} brokers; is it running?")
    return min(_MOST_COPIES, brokers)


def replication_factor(settings: Settings, brokers: int) -> int:
    """``SEGSTREAM_TOPIC_REPLICATION_FACTOR``, or :func:`default_replication_factor`.

    Raises:
        ConfigError: the setting asks for more replicas than the cluster has brokers.
    """
    wanted = settings.topic_replication_factor
    if wanted is None:
        return default_replication_factor(brokers)
    if wanted > brokers:
        raise ConfigError(
            f"SEGSTREAM_TOPIC_REPLICATION_FACTOR is {wanted} but the Kafka cluster has "
            f"{brokers} broker(s); lower it or unset it (the default is min(3, brokers))"
        )
    return wanted


def min_insync_replicas(factor: int) -> int:
    """The ``min.insync.replicas`` that goes with ``factor`` copies: ``factor - 1``, at least 1."""
    return max(1, factor - 1)
