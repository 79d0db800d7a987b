"""Error classification (retriable or permanent), cause text in messages, and retry's limits."""

from __future__ import annotations

import asyncio

import pytest
import redis.exceptions as redis_errors
from aiokafka import errors as kafka_errors
from redis._parsers.base import BaseParser

from segstream.errors import ReplicaWaitTimeout, ServiceError, StateError, StateUnavailable
from segstream.stream.clients.retry import (
    KAFKA_TRANSIENT,
    REDIS_TRANSIENT,
    Fault,
    describe,
    fault_of,
    kafka_fault,
    permanent_message,
    raise_if_permanent,
    redis_call,
    redis_fault,
    retry,
)


def _reply(text: str) -> BaseException:
    """The exception redis-py raises for the server's error reply ``text``."""
    return BaseParser.parse_error(text)


class TestRedisFault:
    @pytest.mark.parametrize(
        "reply",
        [
            "OOM command not allowed when used memory > 'maxmemory'.",
            "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN.",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "MOVED 3999 127.0.0.1:6381",
            "ASK 3999 127.0.0.1:6381",
            "READONLY You can't write against a read only replica.",
        ],
    )
    def test_server_replies_that_can_clear_are_retriable(self, reply: str) -> None:
        assert redis_fault(_reply(reply)) is Fault.RETRIABLE

    def test_out_of_memory_is_a_response_error_and_retriable(self) -> None:
        exc = _reply("OOM command not allowed when used memory > 'maxmemory'.")
        assert isinstance(exc, redis_errors.OutOfMemoryError)
        assert isinstance(exc, redis_errors.ResponseError)
        assert redis_fault(exc) is Fault.RETRIABLE

    @pytest.mark.parametrize(
        "exc",
        [
            redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:6379."),
            redis_errors.TimeoutError("Timeout reading from socket"),
            ConnectionResetError(104, "Connection reset by peer"),
            TimeoutError(),
        ],
    )
    def test_connection_and_timeout_errors_are_retriable(self, exc: BaseException) -> None:
        assert redis_fault(exc) is Fault.RETRIABLE

    @pytest.mark.parametrize(
        "reply",
        [
            "WRONGPASS invalid username-password pair or user is disabled.",
            "NOAUTH Authentication required.",
            "NOPERM User worker has no permissions to run the 'evalsha' command",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "ERR Error running script (call to f_0123): @user_script:3: bad argument",
            "ERR unknown command 'FCALL'",
        ],
    )
    def test_refusals_and_command_errors_are_permanent(self, reply: str) -> None:
        assert redis_fault(_reply(reply)) is Fault.PERMANENT

    def test_authentication_failure_is_permanent_though_a_connection_error(self) -> None:
        exc = _reply("WRONGPASS invalid username-password pair or user is disabled.")
        assert isinstance(exc, redis_errors.ConnectionError)
        assert redis_fault(exc) is Fault.PERMANENT

    def test_other_errors_are_not_redis_faults(self) -> None:
        assert redis_fault(ValueError("bug")) is None
        assert fault_of(KeyError("bug")) is None


class TestKafkaFault:
    @pytest.mark.parametrize(
        "exc",
        [
            kafka_errors.KafkaConnectionError("Connection at 127.0.0.1:9092 closed"),
            kafka_errors.KafkaTimeoutError(),
            kafka_errors.RequestTimedOutError(),
            kafka_errors.NotLeaderForPartitionError(),
            kafka_errors.LeaderNotAvailableError(),
            kafka_errors.NodeNotReadyError(),
            kafka_errors.BrokerNotAvailableError(),
            kafka_errors.NotEnoughReplicasError(),
            kafka_errors.CoordinatorNotAvailableError(),
            kafka_errors.UnknownError(),
            OSError("Connect call failed"),
        ],
    )
    def test_outages_and_moves_are_retriable(self, exc: BaseException) -> None:
        assert kafka_fault(exc) is Fault.RETRIABLE
        assert fault_of(exc) is Fault.RETRIABLE

    @pytest.mark.parametrize(
        "exc",
        [
            kafka_errors.TopicAuthorizationFailedError(),
            kafka_errors.GroupAuthorizationFailedError(),
            kafka_errors.ClusterAuthorizationFailedError(),
            kafka_errors.SaslAuthenticationFailed(),
            kafka_errors.UnknownTopicOrPartitionError(),
            kafka_errors.MessageSizeTooLargeError(),
            kafka_errors.RecordTooLargeError(),
            kafka_errors.InvalidConfigurationError(),
            kafka_errors.UnsupportedVersionError(),
        ],
    )
    def test_refusals_and_impossible_requests_are_permanent(self, exc: BaseException) -> None:
        assert kafka_fault(exc) is Fault.PERMANENT
        assert fault_of(exc) is Fault.PERMANENT

    def test_unknown_topic_is_permanent_though_aiokafka_flags_it_retriable(self) -> None:
        assert kafka_errors.UnknownTopicOrPartitionError.retriable
        assert kafka_fault(kafka_errors.UnknownTopicOrPartitionError()) is Fault.PERMANENT

    def test_a_caught_tuple_holds_every_classified_type(self) -> None:
        assert isinstance(kafka_errors.MessageSizeTooLargeError(), KAFKA_TRANSIENT)
        assert isinstance(_reply("OOM command not allowed"), REDIS_TRANSIENT)
        assert isinstance(_reply("BUSY Redis is busy"), REDIS_TRANSIENT)


class TestMessages:
    def test_describe_names_each_link_with_its_text(self) -> None:
        try:
            try:
                raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 9092)")
            except OSError as inner:
                raise kafka_errors.KafkaConnectionError() from inner
        except kafka_errors.KafkaConnectionError as outer:
            text = describe(outer)
        assert text.startswith("KafkaConnectionError; caused by ConnectionRefusedError: ")
        assert "Connect call failed ('127.0.0.1', 9092)" in text

    def test_describe_keeps_the_text_of_a_single_error(self) -> None:
        exc = redis_errors.ConnectionError("Error 111 connecting to localhost:6379.")
        assert describe(exc) == "ConnectionError: Error 111 connecting to localhost:6379."

    def test_permanent_message_names_cause_and_setting(self) -> None:
        exc = kafka_errors.TopicAuthorizationFailedError("not authorized on segment-changes")
        message = permanent_message("publishing outputs", exc)
        assert message.startswith("publishing outputs failed and retrying cannot help: ")
        assert "TopicAuthorizationFailedError: " in message
        assert "not authorized on segment-changes" in message
        assert "SEGSTREAM_TOPIC_" in message

        size = permanent_message("publishing outputs", kafka_errors.MessageSizeTooLargeError())
        assert "max.message.bytes" in size

        auth = permanent_message("apply events", _reply("WRONGPASS invalid username-password"))
        assert "SEGSTREAM_REDIS_URL" in auth

    def test_raise_if_permanent_raises_only_permanent_ones(self) -> None:
        raise_if_permanent(kafka_errors.KafkaConnectionError(), "publishing")
        with pytest.raises(StateError, match="WRONGTYPE"):
            raise_if_permanent(_reply("WRONGTYPE Operation"), "apply", error=StateError)


class TestRetry:
    def test_retriable_failures_are_retried_and_counted(self) -> None:
        calls: list[int] = []
        counted: list[bool] = []

        async def flaky() -> str:
            calls.append(1)
            if len(calls) < 3:
                raise _reply("OOM command not allowed when used memory > 'maxmemory'.")
            return "ok"

        result = asyncio.run(
            retry(
                flaky,
                what="apply",
                transient=REDIS_TRANSIENT,
                first_delay_s=0.001,
                on_failure=counted.append,
            )
        )
        assert result == "ok"
        assert len(calls) == 3
        assert counted == [True, True]

    def test_a_permanent_failure_stops_at_once_with_its_cause(self) -> None:
        calls: list[int] = []

        async def refused() -> None:
            calls.append(1)
            raise kafka_errors.TopicAuthorizationFailedError("denied")

        with pytest.raises(ServiceError, match="TopicAuthorizationFailedError: denied") as info:
            asyncio.run(retry(refused, what="publishing", transient=KAFKA_TRANSIENT))
        assert len(calls) == 1
        assert isinstance(info.value.__cause__, kafka_errors.TopicAuthorizationFailedError)

    def test_gives_up_after_the_time_limit_with_the_hint(self) -> None:
        async def down() -> None:
            raise redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:1.")

        with pytest.raises(ServiceError) as info:
            asyncio.run(
                retry(
                    down,
                    what="waiting for Redis",
                    transient=REDIS_TRANSIENT,
                    give_up_after_s=0.2,
                    first_delay_s=0.05,
                    max_delay_s=0.05,
                    hint="raise SEGSTREAM_STARTUP_TIMEOUT_S",
                )
            )
        message = str(info.value)
        assert "ConnectionError: Error 111 connecting to 127.0.0.1:1." in message
        assert message.endswith("raise SEGSTREAM_STARTUP_TIMEOUT_S")

    def test_other_errors_propagate_unwrapped(self) -> None:
        async def bug() -> None:
            raise KeyError("bug")

        with pytest.raises(KeyError):
            asyncio.run(retry(bug, what="apply", transient=REDIS_TRANSIENT))


class TestRedisCall:
    """The one retry of a state-store call: Redis's transient errors, StateUnavailable (a
    StateError) on giving up."""

    def test_a_replica_wait_timeout_and_a_dropped_connection_are_retried(self) -> None:
        failures: list[BaseException] = [
            ReplicaWaitTimeout("1 of 2 replicas acknowledged"),
            redis_errors.ConnectionError("Connection reset by peer"),
        ]
        counted: list[bool] = []

        async def flaky() -> str:
            if failures:
                raise failures.pop(0)
            return "ok"

        assert asyncio.run(redis_call(flaky, what="apply", on_failure=counted.append)) == "ok"
        assert counted == [True, True]

    def test_giving_up_after_the_attempts_is_a_state_error_naming_the_call_and_hint(
        self,
    ) -> None:
        calls: list[int] = []

        async def down() -> None:
            calls.append(1)
            raise redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:1.")

        with pytest.raises(StateUnavailable) as info:
            asyncio.run(redis_call(down, what="read a user", attempts=2, hint="check the URL"))
        assert len(calls) == 2
        message = str(info.value)
        assert message.startswith("read a user failed 2 times")
        assert "ConnectionError: Error 111 connecting to 127.0.0.1:1." in message
        assert message.endswith("; check the URL")
        assert isinstance(info.value.__cause__, redis_errors.ConnectionError)

    def test_a_permanent_reply_is_a_state_error_at_once(self) -> None:
        calls: list[int] = []

        async def wrong() -> None:
            calls.append(1)
            raise _reply("WRONGTYPE Operation against a key holding the wrong kind of value")

        with pytest.raises(StateUnavailable, match="retrying cannot help"):
            asyncio.run(redis_call(wrong, what="apply"))
        assert len(calls) == 1

    def test_a_kafka_error_is_not_a_state_stores_and_propagates(self) -> None:
        async def broker() -> None:
            raise kafka_errors.KafkaTimeoutError()

        with pytest.raises(kafka_errors.KafkaTimeoutError):
            asyncio.run(redis_call(broker, what="apply"))
