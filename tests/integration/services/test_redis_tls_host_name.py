"""A TLS Redis whose certificate, from a trusted CA, names another host is refused.

The real ``redis-server`` of ``services up --secure``, started with a certificate issued for
``elsewhere.invalid`` only, by the CA the client trusts: the chain is valid, the name is
wrong. The product's clients (:mod:`segstream.stream.clients.redis`, which the server's own
readiness check uses) must refuse it whatever redis-py version is installed, and say that the
host name is the cause, at once rather than after the start-up timeout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from segstream.errors import ServiceError
from segstream.services.redis import RedisServer
from segstream.services.tls import issue_certificates
from tests.integration.stacks import private_settings


def test_a_certificate_for_another_host_name_is_refused_with_a_clear_message(
    tmp_path: Path,
) -> None:
    settings, ports = private_settings(tmp_path)
    # Issued before the server starts: the stack keeps existing files (it never overwrites).
    issue_certificates(settings.data_dir.resolve() / "tls", server_names=("elsewhere.invalid",))
    server = RedisServer(settings, ports, secure=True)
    try:
        with pytest.raises(ServiceError) as refused:
            server.start()
    finally:
        server.stop()
    message = str(refused.value)
    assert "certificate issued for another host name" in message, message
    assert "SEGSTREAM_REDIS_URL" in message


def test_the_same_server_with_a_certificate_for_its_address_is_accepted(
    tmp_path: Path,
) -> None:
    server = RedisServer(*private_settings(tmp_path), secure=True)
    try:
        assert server.start() is True
    finally:
        server.stop()
