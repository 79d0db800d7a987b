"""How many copies of each topic the cluster keeps, and how many must acknowledge a write.

With ``replication_factor`` copies and ``min.insync.replicas`` = ``replication_factor - 1``
(at least 1), a producer with ``acks=all`` gets an acknowledgement only once that many
replicas have the record, so losing any one broker loses no acknowledged record, and with
three copies writes go on while one broker is down.
"""

from __future__ import annotations

from collections.abc import Mapping

from segstream.errors import ConfigError
from segstream.settings import Settings

__all__ = [
    "check_redis_replicas",
    "default_replication_factor",
    "min_insync_replicas",
    "replication_factor",
]

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


def check_redis_replicas(settings: Settings, replicas: Mapping[str, int]) -> dict[str, int]:
    """Refuse to start when no Redis primary has the replicas the worker will WAIT for.

    One primary short of replicas (its replica crashed, or it was just promoted) is an outage
    the worker rides out by writing that primary degraded (``state/replicas.py``); every
    primary short means the setting asks for more than the deployment has.

    Args:
        replicas: each primary (its address) -> replicas connected to it now.

    Returns:
        The primaries short of replicas (empty when none is), for a warning.

    Raises:
        ConfigError: ``settings.min_replicas`` exceeds every primary's replicas: no batch
            could ever be acknowledged with the durability asked for.
    """
    required = settings.min_replicas
    short = {where: n for where, n in replicas.items() if n < required}
    if not short or len(short) < len(replicas):
        return short
    where, n = min(short.items(), key=lambda item: item[1])
    origin = (
        f"SEGSTREAM_REDIS_MIN_REPLICAS is {required}"
        if settings.redis_min_replicas is not None
        else f"SEGSTREAM_REDIS_MIN_REPLICAS is unset, so {required} on a Redis Cluster"
    )
    raise ConfigError(
        f"{origin}, but Redis primary {where} has {n} replica(s) connected"
        + (f" ({len(short)} primaries are short)" if len(short) > 1 else "")
        + f": the worker would wait for every batch forever. Set SEGSTREAM_REDIS_MIN_REPLICAS={n}"
        " (0 does not wait; a primary's crash can then lose its last writes) or give every"
        " primary that many replicas"
    )
