"""A second worker on one host: the taken HTTP port is refused naming SEGSTREAM_HTTP_PORT=0."""

from __future__ import annotations

import asyncio
import socket

import pytest

from segstream.errors import ServiceError
from segstream.stream.worker.run import check_dependencies
from tests.integration.stream.conftest import app_settings


def test_a_taken_http_port_is_refused_naming_the_setting_that_turns_it_off(
    kafka_bootstrap: str, redis_url: str
) -> None:
    with socket.socket() as first_worker:
        first_worker.bind(("127.0.0.1", 0))
        first_worker.listen()
        port = first_worker.getsockname()[1]
        settings = app_settings(kafka_bootstrap, redis_url, create_topics=False, http_port=port)
        with pytest.raises(ServiceError) as refused:
            asyncio.run(check_dependencies(settings))
    message = str(refused.value)
    assert f"port {port} on 127.0.0.1 is already in use" in message
    assert "SEGSTREAM_HTTP_PORT=0" in message
