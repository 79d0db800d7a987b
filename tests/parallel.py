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

The groups are handed out longest first (:data:`GROUP_SECONDS`: each group's measured seconds
of work), so that the heavy groups start at once and the run does not end on one worker still
busy with a long group that started last. xdist's own order (most tests first) knows nothing
of a group's cost: one test killing a broker ten times outlasts fifty quick ones.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadGroupScheduling
from xdist.workermanage import WorkerController

__all__ = [
    "GROUP_SECONDS",
    "SHARED_SESSION_FIXTURES",
    "GroupScheduling",
    "XdistGroups",
    "group_of",
    "longest_first",
    "read_group_seconds",
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

GROUP_SECONDS = Path(__file__).with_name("group_seconds.json")
"""``{group: seconds}``: each group's setup, call and teardown times summed, measured by a
run with ``--record-group-seconds`` (docs/testing.md); only an order of work, so a stale or
missing figure makes a run slower, never wrong."""

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


def read_group_seconds(path: Path) -> dict[str, float]:
    """The ``{group: seconds}`` of ``path``; empty when there is no such file."""
    if not path.exists():
        return {}
    return {str(group): float(seconds) for group, seconds in json.loads(path.read_text()).items()}


def longest_first(units: Mapping[str, Collection[str]], seconds: Mapping[str, float]) -> list[str]:
    """The groups of ``units`` (group -> its node ids) in the order to hand them out: the
    longest first by ``seconds``; a group without a figure is reckoned at the mean seconds
    per test of the measured ones times its number of tests (ties: most tests first, then by
    name, so the order is the same on every run)."""
    measured = [group for group in units if group in seconds]
    tests = sum(len(units[group]) for group in measured)
    per_test = sum(seconds[group] for group in measured) / tests if tests else 1.0

    def cost(group: str) -> float:
        return seconds.get(group, per_test * len(units[group]))

    return sorted(units, key=lambda group: (-cost(group), -len(units[group]), group))


class GroupScheduling(LoadGroupScheduling):
    """xdist's ``loadgroup`` scheduling, the groups read from the workers' file: each group is
    one unit of work, handed out longest first (:func:`longest_first`)."""

    def __init__(
        self,
        config: pytest.Config,
        log: Producer | None,
        groups: Path,
        seconds: Mapping[str, float],
    ) -> None:
        super().__init__(config, log)
        self._groups_file = groups
        self._groups: dict[str, str] | None = None
        self._seconds = seconds
        self._ordered = False

    def _split_scope(self, nodeid: str) -> str:
        return self.groups().get(nodeid) or super()._split_scope(nodeid)

    def groups(self) -> dict[str, str]:
        """``{node id: group}`` as the workers wrote it (empty if they wrote nothing)."""
        if self._groups is None:
            # Read once all workers have collected (xdist schedules only then).
            found = self._groups_file.exists()
            self._groups = json.loads(self._groups_file.read_text()) if found else {}
        return self._groups

    def _assign_work_unit(self, node: WorkerController) -> None:
        if not self._ordered:
            # The queue is complete by the first assignment (xdist fills it, then assigns).
            for group in longest_first(self.workqueue, self._seconds):
                self.workqueue.move_to_end(group)
            self._ordered = True
        super()._assign_work_unit(node)


class XdistGroups:
    """The controller's side, registered under ``--dist loadgroup``: names the groups file
    to the workers and schedules with it, the longest groups of ``seconds_file`` first; the
    file's folder is removed at the end.

    With ``record`` set, the run's own seconds per group (every test's setup, call and
    teardown, as the workers report them) are written there at the end, in the format of
    :data:`GROUP_SECONDS`.
    """

    def __init__(self, seconds_file: Path = GROUP_SECONDS, record: Path | None = None) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="segstream-xdist-"))
        self.path = self._folder / "groups.json"
        self._seconds_file = seconds_file
        self._record = record
        self._scheduler: GroupScheduling | None = None
        self._spent: defaultdict[str, float] = defaultdict(float)

    def pytest_configure_node(self, node: WorkerController) -> None:
        node.workerinput[GROUPS_KEY] = str(self.path)

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Producer) -> GroupScheduling:
        seconds = read_group_seconds(self._seconds_file)
        self._scheduler = GroupScheduling(config, log, self.path, seconds)
        return self._scheduler

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self._record is not None and self._scheduler is not None:
            self._spent[self._scheduler.groups().get(report.nodeid, report.nodeid)] += (
                report.duration
            )

    def pytest_sessionfinish(self) -> None:
        if self._record is not None and self._spent:
            ordered = sorted(self._spent.items(), key=lambda item: (-item[1], item[0]))
            figures = {group: round(seconds, 1) for group, seconds in ordered}
            self._record.write_text(json.dumps(figures, indent=1) + "\n")

    def pytest_unconfigure(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)
