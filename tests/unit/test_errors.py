"""Error descriptions for people: the type named once, the message kept."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError

from segstream.errors import (
    DriftStateError,
    ReplicaWaitTimeout,
    ServiceError,
    StateConflict,
    StateError,
    StateUnavailable,
    describe,
)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            RedisConnectionError("Error 111 connecting to 127.0.0.1:1."),
            "ConnectionError: Error 111 connecting to 127.0.0.1:1.",
        ),
        (
            KafkaConnectionError("KafkaConnectionError: Unable to bootstrap"),
            "KafkaConnectionError: Unable to bootstrap",
        ),
        (KafkaConnectionError(), "KafkaConnectionError"),
        (TimeoutError(), "TimeoutError"),
        (ValueError("  spaced  "), "ValueError: spaced"),
        (ServiceError("cannot reach Kafka at h:1"), "cannot reach Kafka at h:1"),
    ],
)
def test_an_error_is_described_with_its_type_once_and_its_message(
    exc: BaseException, expected: str
) -> None:
    assert describe(exc) == expected


@pytest.mark.parametrize(
    "kind", [StateUnavailable, StateConflict, DriftStateError, ReplicaWaitTimeout]
)
def test_each_kind_of_state_failure_is_still_caught_as_a_state_error(
    kind: type[StateError],
) -> None:
    # Callers that do not tell the cases apart (the CLI, a batch's failure) keep one catch.
    assert issubclass(kind, StateError)
    assert not issubclass(kind, ServiceError)
