"""Asking the workers to forget users: a tombstone per user on the ``users`` topic.

``segstream forget USER_ID`` and ``POST /users/{user_id}/forget`` both call
:func:`request_leaves`. Neither touches Redis: the erasure is a domain change
(:class:`~segstream.stream.domain.events.UserLeft`) applied by the worker that owns the user's
partition, in order with the user's other events of that topic, by the same batch, Lua and
outbox path as every change (``docs/stream.md``, "A user leaving"). A tombstone (a null value,
key = the user id as :func:`~segstream.stream.domain.events.user_key` writes it) is Kafka's own
"this key is deleted": it needs no schema, and it lands on the user's partition by the default
partitioner like every event of theirs.

With change data capture (``SEGSTREAM_SOURCE=cdc``) the database is the source of truth: a
user is forgotten by deleting their ``users`` row, and a tombstone here would be read by no
worker, so :func:`request_leaves` refuses (:func:`check_source`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from segstream.errors import ConfigError, ServiceError
from segstream.settings import Settings
from segstream.stream.clients.kafka import admin_client
from segstream.stream.clients.kafka import producer as kafka_producer
from segstream.stream.domain.events import user_key
from segstream.stream.kafka.lag import topic_partitions

__all__ = ["LeaveRequest", "check_source", "leave_producer", "request_leaves"]

SEND_TIMEOUT_S = 30.0
"""Longest a tombstone waits for the broker's acknowledgement (the producer's own timeout)."""


@dataclass(frozen=True, slots=True)
class LeaveRequest:
    """A tombstone the broker acknowledged: the user's leave is queued for their worker."""

    user_id: int
    topic: str
    partition: int
    offset: int


def check_source(settings: Settings) -> None:
    """Refuse to send a tombstone no worker reads.

    Raises:
        ConfigError: ``SEGSTREAM_SOURCE=cdc``: the workers read the database's changes, so a
            user leaves by their ``users`` row being deleted.
    """
    if settings.source == "cdc":
        raise ConfigError(
            "SEGSTREAM_SOURCE=cdc: the workers read the shop database's changes, not "
            f"{settings.topic_users!r}; forget a user by deleting their row (DELETE FROM "
            f"{settings.cdc_schema}.users WHERE id = ...): the worker erases them when the "
            "delete arrives"
        )


def leave_producer(settings: Settings) -> AIOKafkaProducer:
    """The producer of tombstones (not started): idempotent, ``acks=all``, no lingering."""
    return kafka_producer(
        settings,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        request_timeout_ms=int(SEND_TIMEOUT_S * 1000),
    )


async def _topic_exists(settings: Settings, topic: str) -> bool:
    """Whether ``topic`` exists, asked without naming it to the broker (which could create it:
    :func:`~segstream.stream.kafka.lag.topic_partitions`)."""
    admin = admin_client(settings)
    await admin.start()
    try:
        _, missing = await topic_partitions(admin, [topic])
    finally:
        await admin.close()
    return not missing


async def request_leaves(
    settings: Settings, user_ids: Sequence[int], producer: AIOKafkaProducer | None = None
) -> list[LeaveRequest]:
    """Send one tombstone per user to ``settings.topic_users``, in order; wait for the acks.

    Args:
        producer: a started producer to send with (the API keeps one); ``None``: one is
            made, started and stopped here.

    Returns:
        Where each tombstone landed, in ``user_ids`` order.

    Raises:
        ConfigError: see :func:`check_source`.
        ServiceError: the topic does not exist (it is not created here), the broker cannot be
            reached, or it refuses a tombstone; naming the topic and the broker.
    """
    check_source(settings)
    topic = settings.topic_users
    where = settings.kafka_bootstrap_servers
    own = producer is None
    sender = leave_producer(settings) if producer is None else producer
    try:
        # Checked first: a broker that auto-creates topics would otherwise make the users
        # topic on the first send, with its default partition count, not the workers'.
        if not await _topic_exists(settings, topic):
            raise ServiceError(
                f"the topic {topic!r} does not exist at {where}: no worker of this app ever "
                "ran, so there is nobody to forget (SEGSTREAM_TOPIC_USERS, SEGSTREAM_APP_ID)"
            )
        if own:
            await sender.start()
        requests = []
        for user_id in user_ids:
            metadata = await sender.send_and_wait(topic, value=None, key=user_key(user_id))
            requests.append(LeaveRequest(user_id, topic, metadata.partition, metadata.offset))
        return requests
    except (KafkaError, OSError, TimeoutError) as exc:
        raise ServiceError(
            f"cannot send the leave of user(s) {list(user_ids)[:10]} to {topic!r} at {where}: "
            f"{exc!r} (is the broker up, and does the topic exist? SEGSTREAM_TOPIC_USERS, "
            "SEGSTREAM_KAFKA_BOOTSTRAP_SERVERS)"
        ) from exc
    finally:
        if own:
            await sender.stop()
