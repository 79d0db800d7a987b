"""The topic helpers close every admin client they start, whether or not it started."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from segstream.settings import Settings
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
