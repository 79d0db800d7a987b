"""Hooks for the whole suite: which tests share a pytest-xdist worker (tests/parallel.py)."""

from __future__ import annotations

import pytest

from tests.parallel import XdistGroups, write_groups


def pytest_configure(config: pytest.Config) -> None:
    controller = not hasattr(config, "workerinput")
    xdist = config.pluginmanager.hasplugin("xdist")
    if controller and xdist and config.getoption("dist") == "loadgroup":
        config.pluginmanager.register(XdistGroups(), "segstream-xdist-groups")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Last, so the node ids written are the ones the worker reports to the controller.
    write_groups(config, items)
