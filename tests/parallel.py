"""Which tests share a pytest-xdist worker (``-n N --dist loadgroup``), so that expensive
fixtures are set up once per run rather than once per worker.

Every worker has a session stack of its own (Kafka and Redis on its own ports, under its own
temporary directory: tests/integration/conftest.py), so most tests can run anywhere. Two kinds
of fixture decide otherwise:

- module-scoped ones (a served app, a broker of a module's own): a module's tests stay on one
  worker, as with ``--dist loadfile``;
- the session fixtures in :data:`SHARED_SESSION_FIXTURES`, which take tens of seconds or a
  whole cluster of processes: every test using one runs on the same worker, whatever its
  module, so the fixture starts once.

The group is derived from the fixtures a test requests, never listed by hand, so a new test
that uses Kafka Connect joins the Connect group by itself; an explicit ``xdist_group`` mark
still wins.

Why not xdist's own ``loadgroup`` alone: it passes the group to the scheduler by appending
``@group`` to each test's node id, which pytest 9.2's structured node ids no longer allow, so
every test silently becomes a group of its own (pytest-dev/pytest-xdist#1386). Here the
workers write the groups to a file the controller names (:class:`XdistGroups`) and the
scheduler reads it (:class:`GroupScheduling`); node ids that do carry ``@group`` (a fixed
xdist) are still split as xdist does.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Collection, Iterable
from pathlib import Path

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadGroupScheduling
from xdist.workermanage import WorkerController

__all__ = [
    "SHARED_SESSION_FIXTURES",
    "GroupScheduling",
    "XdistGroups",
    "group_of",
    "write_groups",
    "xdist_group",
]

SHARED_SESSION_FIXTURES = (
    "cdc",  # PostgreSQL + Kafka Connect with Debezium: Connect takes tens of seconds to start
    "clusters",  # a 6-node Redis Cluster and three KRaft brokers
    "secure_stack",  # a SASL_SSL broker and a TLS Redis with their own CA
    "postgres_url",  # the training tests' PostgreSQL (initdb + start)
)
"""Session fixtures started by one worker only; a test using several goes with the first."""

GROUPS_KEY = "segstream_groups_file"
"""The key of ``workerinput`` naming the file the workers write the groups to."""


def xdist_group(module: str, fixturenames: Collection[str]) -> str:
    """The group of a test of ``module`` (its node id's path part) that requests
    ``fixturenames`` (directly or through other fixtures)."""
    for name in SHARED_SESSION_FIXTURES:
        if name in fixturenames:
            return f"session-{name}"
    return module


def group_of(item: pytest.Item) -> str:
    """``item``'s group: its ``xdist_group`` mark's name, else :func:`xdist_group`."""
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    return xdist_group(item.nodeid.split("::")[0], getattr(item, "fixturenames", ()))


def write_groups(config: pytest.Config, items: Iterable[pytest.Item]) -> None:
    """On an xdist worker of a grouped run, write ``{node id: group}`` where the controller
    will read it (every worker collects the same tests; the last rename wins, whole)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None or GROUPS_KEY not in workerinput:
        return
    path = Path(workerinput[GROUPS_KEY])
    partial = path.with_name(f"{path.name}.{workerinput['workerid']}")
    partial.write_text(json.dumps({item.nodeid: group_of(item) for item in items}))
    os.replace(partial, path)


class GroupScheduling(LoadGroupScheduling):
    """xdist's ``loadgroup`` scheduling, the groups read from the workers' file: each group is
    one unit of work, the largest first."""

    def __init__(self, config: pytest.Config, log: Producer | None, groups: Path) -> None:
        super().__init__(config, log)
        self._groups_file = groups
        self._groups: dict[str, str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if self._groups is None:
            # Read once all workers have collected (xdist schedules only then).
            found = self._groups_file.exists()
            self._groups = json.loads(self._groups_file.read_text()) if found else {}
        return self._groups.get(nodeid) or super()._split_scope(nodeid)


class XdistGroups:
    """The controller's side, registered under ``--dist loadgroup``: names the groups file
    to the workers and schedules with it; the file's folder is removed at the end."""

    def __init__(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="segstream-xdist-"))
        self.path = self._folder / "groups.json"

    def pytest_configure_node(self, node: WorkerController) -> None:
        node.workerinput[GROUPS_KEY] = str(self.path)

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Producer) -> GroupScheduling:
        return GroupScheduling(config, log, self.path)

    def pytest_unconfigure(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)
