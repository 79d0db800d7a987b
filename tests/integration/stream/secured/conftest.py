"""A secured stack for the session (``segstream services up --secure``): SASL_SSL Kafka with
a SCRAM-SHA-512 user, TLS-only Redis with the worker-ACL user, a throwaway CA; started once,
on free ports, beside the session's plaintext stack."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from segstream.services.stack import Stack
from segstream.settings import Settings
from tests.integration.stacks import private_settings, running

APP_ID = "secure"
"""The app id of every test here: the Redis ACL user's keys are ``secure:*``."""


@pytest.fixture(scope="session")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    private = private_settings(tmp_path_factory.mktemp("secure-stack"), app_id=APP_ID)
    with running(Stack(*private, secure=True)) as stack:
        yield stack


@pytest.fixture(scope="session")
def secure_client(secure_stack: Stack) -> Settings:
    """Settings of a client of the secured stack (its credentials, CA and addresses)."""
    return secure_stack.client


def security_overrides(client: Settings) -> dict[str, object]:
    """The settings a client of the secured stack carries on top of an app's own."""
    names = (
        "kafka_security_protocol",
        "kafka_sasl_mechanism",
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_cafile",
        "redis_username",
        "redis_password",
        "redis_ssl_cafile",
    )
    return {name: getattr(client, name) for name in names}
