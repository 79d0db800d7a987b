"""tests/parallel.py under a real ``pytest -n 2 --dist loadgroup`` run (three pytest
processes: here rather than in the unit tier, whose budget is a minute)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PLUGINS = ("-p", "no:hypothesispytest", "-p", "no:schemathesis", "-p", "tests.conftest")
"""xdist and the suite's hooks, without hypothesis and schemathesis: they play no part in the
grouping and would add seconds of imports to each of the pytest processes."""
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

CONFTEST = """
import json
import os
import pytest

@pytest.fixture(scope="session")
def cdc():
    return "connect"

@pytest.fixture
def record(request):
    yield
    with open("ran.txt", "a") as out:
        out.write(f"{request.node.name} {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""


def test_an_xdist_run_puts_one_shared_fixture_on_one_worker(tmp_path: Path) -> None:
    """Two modules' tests on Connect run on one worker; two plain modules on both.

    xdist hands each of its (two) workers a unit of work at the start, so two tests in
    separate groups always run on separate workers, and in one group on the same one.
    """
    (tmp_path / "conftest.py").write_text(CONFTEST)
    for name in ("a", "b"):
        (tmp_path / f"test_cdc_{name}.py").write_text(f"def test_cdc_{name}(cdc, record): pass\n")
        (tmp_path / f"test_plain_{name}.py").write_text(f"def test_plain_{name}(record): pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PLUGINS,
         "-n", "2", "--dist", "loadgroup", "."],
        cwd=tmp_path, env=ENV,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    ran = dict(line.split() for line in (tmp_path / "ran.txt").read_text().splitlines())
    assert len(ran) == 4
    assert ran["test_cdc_a"] == ran["test_cdc_b"]
    assert ran["test_plain_a"] != ran["test_plain_b"]


def test_groups_run_longest_first_and_a_run_records_its_seconds_per_group(tmp_path: Path) -> None:
    """On one worker the order is visible: the measured longest group first, whatever its
    number of tests (xdist's own order would start with the two Connect tests); the run then
    writes its own figures per group."""
    (tmp_path / "conftest.py").write_text(CONFTEST)
    for name in ("a", "b"):
        (tmp_path / f"test_cdc_{name}.py").write_text(f"def test_cdc_{name}(cdc, record): pass\n")
        (tmp_path / f"test_plain_{name}.py").write_text(f"def test_plain_{name}(record): pass\n")
    seconds = {"test_plain_b.py": 100.0, "session-cdc": 5.0, "test_plain_a.py": 1.0}
    (tmp_path / "seconds.json").write_text(json.dumps(seconds))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PLUGINS,
         "-n", "1", "--dist", "loadgroup", "--group-seconds", "seconds.json",
         "--record-group-seconds", "measured.json", "."],
        cwd=tmp_path, env=ENV,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    ran = [line.split()[0] for line in (tmp_path / "ran.txt").read_text().splitlines()]
    assert ran[0] == "test_plain_b"
    assert ran[-1] == "test_plain_a"
    assert set(ran[1:3]) == {"test_cdc_a", "test_cdc_b"}
    measured = json.loads((tmp_path / "measured.json").read_text())
    assert set(measured) == {"test_plain_a.py", "test_plain_b.py", "session-cdc"}
    assert all(isinstance(figure, float) and figure >= 0 for figure in measured.values())
