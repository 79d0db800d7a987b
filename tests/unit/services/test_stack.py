"""What the stack refuses before it starts anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from segstream.errors import ServiceError
from segstream.services.stack import Stack
from segstream.settings import load_settings, load_stack_settings


@pytest.mark.parametrize(
    ("secure", "options"),
    [(True, {}), (False, {"kafka_brokers": 3}), (False, {"redis_cluster": True})],
)
def test_cdc_runs_beside_one_plaintext_broker_only(
    tmp_path: Path, secure: bool, options: dict[str, object]
) -> None:
    stack = Stack(load_settings(data_dir=tmp_path), load_stack_settings(), secure=secure)
    with pytest.raises(ServiceError, match="--cdc"):
        stack.up(cdc=True, **options)  # type: ignore[arg-type]
    assert not any(status.pid for status in stack.status())


def test_the_cdc_services_are_listed_once_they_were_used(tmp_path: Path) -> None:
    stack = Stack(load_settings(data_dir=tmp_path), load_stack_settings())
    assert [s.name for s in stack.status()] == ["kafka", "redis"]
    stack.postgres.home.mkdir(parents=True)
    names = [s.name for s in stack.status()]
    assert names == ["kafka", "redis", "postgres", "connect"]
    assert "connect" in stack.down() and "postgres" in stack.down()
