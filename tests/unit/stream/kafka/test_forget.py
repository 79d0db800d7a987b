"""Asking for a leave: refused, naming the database, when the workers read change data capture."""

from __future__ import annotations

import asyncio

import pytest

from segstream.errors import ConfigError
from segstream.settings import load_settings
from segstream.stream.kafka.forget import check_source, request_leaves


def test_the_json_source_takes_tombstones() -> None:
    check_source(load_settings(source="json"))


def test_with_cdc_a_leave_is_refused_before_any_connection_naming_the_users_row() -> None:
    settings = load_settings(source="cdc", cdc_schema="shop", kafka_bootstrap_servers="0.0.0.0:1")
    with pytest.raises(ConfigError, match=r"SEGSTREAM_SOURCE=cdc.*DELETE FROM shop\.users"):
        asyncio.run(request_leaves(settings, [42]))
