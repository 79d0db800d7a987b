"""Which dependency errors are worth retrying, and retrying them with capped exponential backoff.

Every failure of Redis or the broker is put in one of two classes here, by pure functions
(:func:`redis_fault`, :func:`kafka_fault`, :func:`fault_of`):

- **retriable**: the server is down, restarting, loading, out of memory, busy, moving a slot or
  a partition leader, or did not answer in time. Coming back is the normal end of these, so the
  worker waits and retries without limit (each failure logged and counted); giving up would
  mean dropping events or crashing into a redelivery loop;
- **permanent**: retrying cannot help (refused credentials or ACLs, a missing topic, a record
  larger than the broker accepts, an invalid configuration, a command Redis rejects). These
  stop the worker at once with a message naming the cause and what to change
  (:func:`permanent_message`), instead of a retry loop that looks like a silent stall.

A Kafka error that aiokafka does not flag ``retriable`` and that is not in the permanent list
(``KafkaTimeoutError``, ``BrokerNotAvailableError``, an unknown error code...) is retried: a
broker restart produces several of them, and one that never clears is caught by the worker's
progress watchdog (:mod:`segstream.stream.worker.watchdog`), which restarts the worker.

Commands for people (``segstream segment``) pass ``attempts`` or ``give_up_after_s`` to
:func:`retry` and get a SegstreamError. A call on the state store (Redis) goes through
:func:`redis_call`, the one place that says which errors of a Redis call are retried and what
giving up raises.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.exceptions as redis_errors
from aiokafka import errors as kafka_errors

from segstream.errors import ReplicaWaitTimeout, SegstreamError, ServiceError, StateUnavailable
from segstream.errors import describe as describe_one

__all__ = [
    "KAFKA_TRANSIENT",
    "REDIS_TRANSIENT",
    "Fault",
    "backoff_delays",
    "describe",
    "fault_of",
    "kafka_fault",
    "permanent_message",
    "raise_if_permanent",
    "redis_call",
    "redis_fault",
    "retry",
]

T = TypeVar("T")
log = logging.getLogger(__name__)

REDIS_TRANSIENT: tuple[type[BaseException], ...] = (
    redis_errors.RedisError,
    OSError,
    TimeoutError,
    ReplicaWaitTimeout,
)
"""The exception types a Redis failure surfaces as; :func:`redis_fault` says which to retry
(a :class:`~segstream.errors.ReplicaWaitTimeout`, replicas late to acknowledge, is retried)."""

KAFKA_TRANSIENT: tuple[type[BaseException], ...] = (kafka_errors.KafkaError, OSError, TimeoutError)
"""The exception types a broker failure surfaces as; :func:`kafka_fault` says which to retry."""


class Fault(enum.Enum):
    """What to do about a dependency's error."""

    RETRIABLE = "retriable"
    """Wait and try again: the dependency is expected to recover."""
    PERMANENT = "permanent"
    """Stop and tell the operator: retrying cannot succeed."""


_REDIS_RETRIABLE_CODES = frozenset(
    {"BUSY", "LOADING", "OOM", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "MOVED", "ASK", "READONLY"}
)
"""Error codes (the reply's first word) of Redis replies that a later retry can succeed after."""

_REDIS_ACCESS: tuple[type[BaseException], ...] = (
    redis_errors.AuthenticationError,  # a ConnectionError subclass: checked before those
    redis_errors.AuthorizationError,
    redis_errors.NoPermissionError,
    redis_errors.AuthenticationWrongNumberOfArgsError,
)
_REDIS_PERMANENT: tuple[type[BaseException], ...] = (*_REDIS_ACCESS, redis_errors.DataError)
_REDIS_RETRIABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # BusyLoadingError (LOADING) included
    redis_errors.TimeoutError,
    redis_errors.OutOfMemoryError,  # a ResponseError: maxmemory reached with noeviction
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,  # MasterDownError included
    redis_errors.AskError,  # MovedError included
    redis_errors.ReadOnlyError,  # a replica promoted or demoted under us
    OSError,
    TimeoutError,
)

_KAFKA_ACCESS: tuple[type[BaseException], ...] = (
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.TransactionalIdAuthorizationFailed,
)
_KAFKA_AUTHENTICATION: tuple[type[BaseException], ...] = (
    kafka_errors.AuthenticationFailedError,
    kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.SaslAuthenticationFailed,
    kafka_errors.UnsupportedSaslMechanismError,
    kafka_errors.IllegalSaslStateError,
)
_KAFKA_TOPIC: tuple[type[BaseException], ...] = (
    # The worker creates its topics before it starts, and aiokafka has already retried this
    # one while metadata propagated: seen here, the topic was deleted or never created.
    kafka_errors.UnknownTopicOrPartitionError,
    kafka_errors.InvalidTopicError,
)
_KAFKA_SIZE: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
)
_KAFKA_CONFIG: tuple[type[BaseException], ...] = (
    kafka_errors.InvalidConfigurationError,
    kafka_errors.KafkaConfigurationError,
    kafka_errors.InvalidRequiredAcksError,
    kafka_errors.UnsupportedVersionError,
    kafka_errors.IncompatibleBrokerVersion,
    kafka_errors.UnsupportedCodecError,
    kafka_errors.PolicyViolationError,
)
_KAFKA_PERMANENT = (
    *_KAFKA_ACCESS,
    *_KAFKA_AUTHENTICATION,
    *_KAFKA_TOPIC,
    *_KAFKA_SIZE,
    *_KAFKA_CONFIG,
)

_REMEDIES: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    (_REDIS_ACCESS, "check the user and password in SEGSTREAM_REDIS_URL and that user's ACL"),
    (
        (redis_errors.RedisError,),
        "Redis refused a command: check that SEGSTREAM_REDIS_URL points at Redis 7 or later "
        "with no command renamed or disabled",
    ),
    (
        _KAFKA_ACCESS,
        "grant this client's principal the ACLs on the SEGSTREAM_TOPIC_* topics and the "
        "SEGSTREAM_APP_ID group",
    ),
    (
        _KAFKA_AUTHENTICATION,
        "check the credentials and security settings for SEGSTREAM_KAFKA_BOOTSTRAP_SERVERS",
    ),
    (_KAFKA_TOPIC, "create the topic, or set the SEGSTREAM_TOPIC_* setting that names it"),
    (
        _KAFKA_SIZE,
        "raise the topic's max.message.bytes (and the broker's message.max.bytes), or lower "
        "SEGSTREAM_BATCH_SIZE",
    ),
)
"""What an operator changes to cure a permanent error, by its type (first match wins)."""
_DEFAULT_REMEDY = (
    "check SEGSTREAM_KAFKA_BOOTSTRAP_SERVERS and the broker's version and configuration"
)


def redis_fault(exc: BaseException) -> Fault | None:
    """How to handle ``exc`` from redis-py; ``None`` when it is not a Redis or network error.

    Permanent: refused credentials or ACLs, client-side data errors, and any reply error whose
    code is not one of BUSY, LOADING, OOM, TRYAGAIN, CLUSTERDOWN, MASTERDOWN, MOVED, ASK,
    READONLY (a script bug, WRONGTYPE, an unknown command). Everything else is retriable.
    """
    if isinstance(exc, _REDIS_PERMANENT):
        return Fault.PERMANENT
    if isinstance(exc, _REDIS_RETRIABLE):
        return Fault.RETRIABLE
    if isinstance(exc, redis_errors.ResponseError):
        code = getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]
        return Fault.RETRIABLE if code in _REDIS_RETRIABLE_CODES else Fault.PERMANENT
    if isinstance(exc, redis_errors.RedisError):
        return Fault.RETRIABLE  # InvalidResponse, PubSubError...: a connection gone wrong
    return None


def kafka_fault(exc: BaseException) -> Fault | None:
    """How to handle ``exc`` from aiokafka; ``None`` when it is not a Kafka or network error.

    Permanent: authorisation and authentication failures, an unknown or invalid topic, a record
    too large, an invalid configuration, an unsupported version. Every other KafkaError is
    retriable, whether or not aiokafka flags it ``retriable`` (see the module docstring).
    """
    if isinstance(exc, _KAFKA_PERMANENT):
        return Fault.PERMANENT
    if isinstance(exc, (kafka_errors.KafkaError, OSError, TimeoutError)):
        return Fault.RETRIABLE
    return None


def fault_of(exc: BaseException) -> Fault | None:
    """:func:`kafka_fault` or :func:`redis_fault` of ``exc``, whichever client raised it."""
    if isinstance(exc, kafka_errors.KafkaError):
        return kafka_fault(exc)
    return redis_fault(exc)


def describe(exc: BaseException, depth: int = 3) -> str:
    """``Type: text`` of ``exc`` and of up to ``depth - 1`` causes, e.g. for logs and errors.

    ``repr`` of a wrapper often hides what went wrong (``KafkaConnectionError()``, the text in
    its cause), so each link of the chain is named with its own text, as
    :func:`segstream.errors.describe` words one error (its type once).
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and len(parts) < depth and id(current) not in seen:
        seen.add(id(current))
        parts.append(describe_one(current))
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return "; caused by ".join(parts)


def _remedy(exc: BaseException) -> str:
    return next((text for types, text in _REMEDIES if isinstance(exc, types)), _DEFAULT_REMEDY)


def permanent_message(what: str, exc: BaseException) -> str:
    """The message for a permanent failure: what failed, its cause's text, what to change."""
    return f"{what} failed and retrying cannot help: {describe(exc)}; {_remedy(exc)}"


def raise_if_permanent(
    exc: BaseException, what: str, error: type[SegstreamError] = ServiceError
) -> None:
    """Raise ``error`` (chained to ``exc``) when :func:`fault_of` says ``exc`` is permanent.

    Raises:
        ``error``: ``exc`` is permanent, with :func:`permanent_message`.
    """
    if fault_of(exc) is Fault.PERMANENT:
        raise error(permanent_message(what, exc)) from exc


def backoff_delays(first_s: float, cap_s: float) -> Callable[[int], float]:
    """Delay before retry ``n`` (1-based): ``first_s * 2**(n-1)``, at most ``cap_s`` seconds."""

    def delay(n: int) -> float:
        return min(cap_s, first_s * 2.0 ** min(n - 1, 30))

    return delay


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    transient: tuple[type[BaseException], ...],
    attempts: int | None = None,
    give_up_after_s: float | None = None,
    first_delay_s: float = 0.05,
    max_delay_s: float = 5.0,
    error: type[SegstreamError] = ServiceError,
    hint: str = "",
    on_failure: Callable[[bool], None] | None = None,
) -> T:
    """Await ``operation()`` until it succeeds, sleeping between retriable failures.

    Args:
        operation: makes a fresh awaitable per attempt; it must be safe to repeat.
        what: names the operation in logs and errors ("apply batch to Redis").
        transient: exception types caught; each is classified by :func:`fault_of` (one it
            does not know, e.g. a SegstreamError the caller listed, is retried). Any other
            type propagates at once.
        attempts: give up after this many failures; ``None``: no limit by count.
        give_up_after_s: give up at the first failure this many seconds after the first
            attempt started; ``None``: no limit by time.
        error: the SegstreamError subclass raised when giving up or on a permanent error.
        hint: appended to the giving-up message (what to start, which setting to raise).
        on_failure: called after each failure with ``True`` when a retry follows (``False``
            when giving up or permanent), e.g. to count errors and retries in metrics.

    Raises:
        ``error``: a permanent failure (at once), or after ``attempts`` failures or
        ``give_up_after_s`` seconds, chained to the last failure.
    """
    delay = backoff_delays(first_delay_s, max_delay_s)
    failures = 0
    started = time.monotonic()
    while True:
        try:
            return await operation()
        except transient as exc:
            failures += 1
            if fault_of(exc) is Fault.PERMANENT:
                if on_failure is not None:
                    on_failure(False)
                raise error(permanent_message(what, exc)) from exc
            elapsed = time.monotonic() - started
            giving_up = (attempts is not None and failures >= attempts) or (
                give_up_after_s is not None and elapsed >= give_up_after_s
            )
            if on_failure is not None:
                on_failure(not giving_up)
            if giving_up:
                message = (
                    f"{what} failed {failures} times over {elapsed:.1f} s, last: {describe(exc)}"
                )
                raise error(f"{message}; {hint}" if hint else message) from exc
            wait = delay(failures)
            if give_up_after_s is not None:
                wait = max(0.0, min(wait, give_up_after_s - elapsed))
            level = logging.WARNING if failures < 10 else logging.ERROR
            log.log(level, "%s (%s); retry %d in %.1f s", what, describe(exc), failures, wait)
            await asyncio.sleep(wait)


async def redis_call(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempts: int | None = None,
    hint: str = "",
    on_failure: Callable[[bool], None] | None = None,
) -> T:
    """Await ``operation()``, a call on the state store (Redis), retrying as :func:`retry` does.

    The failures retried are :data:`REDIS_TRANSIENT`'s (classified by :func:`redis_fault`),
    with the backoff of :func:`retry`'s defaults: 0.05 s doubling up to 5 s.

    Args:
        operation: makes a fresh awaitable per attempt; it must be safe to repeat.
        what: names the call in logs and errors ("apply batch to Redis").
        attempts: give up after this many failures; ``None`` (a worker): no limit.
        hint: appended to the giving-up message (which setting to check).
        on_failure: as :func:`retry`'s, e.g. to count Redis errors and retries.

    Raises:
        StateUnavailable: a permanent failure (at once), or ``attempts`` failures, chained to
            the last one.
    """
    return await retry(
        operation,
        what=what,
        transient=REDIS_TRANSIENT,
        attempts=attempts,
        error=StateUnavailable,
        hint=hint,
        on_failure=on_failure,
    )
