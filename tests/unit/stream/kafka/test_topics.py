"""The topic helpers close every admin client they start, and judge the broker's answers."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    BrokerNotAvailableError,
    InvalidReplicationFactorError,
    KafkaError,
    PolicyViolationError,
    TopicAlreadyExistsError,
)

from segstream.errors import ServiceError
from segstream.settings import Settings
from segstream.stream.clients.retry import Fault, kafka_fault
from segstream.stream.kafka import topics
from tests.ports import free_port


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[AIOKafkaAdminClient]:
    """Every admin client the module builds (real clients, from the real factory)."""
    built: list[AIOKafkaAdminClient] = []
    factory = topics.admin_client

    def recording(settings: Settings, **options: object) -> AIOKafkaAdminClient:
        built.append(factory(settings, **options))
        return built[-1]

    monkeypatch.setattr(topics, "admin_client", recording)
    return built


def _closed(admin: AIOKafkaAdminClient) -> bool:
    return bool(admin._closed)  # aiokafka keeps no public flag


@pytest.mark.parametrize("call", ["partitions_of", "broker_count"])
def test_a_broker_that_cannot_be_reached_leaves_no_admin_client_open(
    call: str, opened: list[AIOKafkaAdminClient]
) -> None:
    # Nothing listens on the port: the client's start fails.
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    read = {
        "partitions_of": lambda: topics.partitions_of(settings, "users"),
        "broker_count": lambda: topics.broker_count(settings),
    }[call]
    with pytest.raises(KafkaError):
        asyncio.run(read())
    assert opened, "no admin client was built"
    assert all(_closed(admin) for admin in opened)


@pytest.mark.parametrize("code", [0, TopicAlreadyExistsError.errno])
def test_a_created_or_already_existing_topic_is_accepted(code: int) -> None:
    topics.check_created("users", code, copies=3, brokers=3)


def test_too_few_replicas_while_enough_brokers_are_listed_is_retried_as_a_broker_fault() -> None:
    # Listed but fenced (just restarted, or resumed from a pause): the controller heals.
    with pytest.raises(BrokerNotAvailableError, match="fewer than 3 unfenced"):
        topics.check_created("users", InvalidReplicationFactorError.errno, copies=3, brokers=3)
    assert kafka_fault(BrokerNotAvailableError()) is Fault.RETRIABLE


@pytest.mark.parametrize(
    ("code", "copies", "brokers"),
    [
        (InvalidReplicationFactorError.errno, 3, 2),  # more copies than brokers: never heals
        (PolicyViolationError.errno, 1, 1),
    ],
)
def test_any_other_refusal_to_create_a_topic_is_a_service_error_naming_the_code(
    code: int, copies: int, brokers: int
) -> None:
    with pytest.raises(ServiceError, match=f"topic users: error {code}"):
        topics.check_created("users", code, copies=copies, brokers=brokers)


class _Describing:
    """Answers ``describe_cluster`` with ``brokers`` brokers, as the admin client does."""

    def __init__(self, brokers: int) -> None:
        self.brokers = brokers

    async def describe_cluster(self) -> dict[str, list[dict[str, int]]]:
        return {"brokers": [{"node_id": n} for n in range(self.brokers)]}


def test_a_cluster_listing_no_broker_is_a_broker_fault_to_retry_not_a_count_of_zero() -> None:
    # Every broker fenced for a moment: the worker's start and topic creation retry it.
    with pytest.raises(BrokerNotAvailableError, match="no live broker"):
        asyncio.run(topics._live_brokers(_Describing(0)))  # type: ignore[arg-type]
    assert asyncio.run(topics._live_brokers(_Describing(3))) == 3  # type: ignore[arg-type]
