"""Error descriptions for people: the type named once, the message kept."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError

from segstream.errors import ServiceError, describe


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
