"""Hooks for the whole suite: which tests share a pytest-xdist worker (tests/parallel.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.parallel import GROUP_SECONDS, XdistGroups, write_groups


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("segstream", "segstream's xdist groups (tests/parallel.py)")
    group.addoption(
        "--group-seconds",
        type=Path,
        default=GROUP_SECONDS,
        help="the measured seconds per group that order the work, longest first "
        "(default: %(default)s)",
    )
    group.addoption(
        "--record-group-seconds",
        type=Path,
        default=None,
        help="write this run's seconds per group there, in the format of --group-seconds",
    )


def pytest_configure(config: pytest.Config) -> None:
    controller = not hasattr(config, "workerinput")
    xdist = config.pluginmanager.hasplugin("xdist")
    if controller and xdist and config.getoption("dist") == "loadgroup":
        groups = XdistGroups(
            config.getoption("group_seconds"), config.getoption("record_group_seconds")
        )
        config.pluginmanager.register(groups, "segstream-xdist-groups")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Last, so the node ids written are the ones the worker reports to the controller.
    write_groups(config, items)
