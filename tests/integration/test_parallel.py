"""tests/parallel.py under a real ``pytest -n 2 --dist loadgroup`` run (three pytest
processes: here rather than in the unit tier, whose budget is a minute)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CONFTEST = """
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
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "-n", "2", "--dist", "loadgroup", "."],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    ran = dict(line.split() for line in (tmp_path / "ran.txt").read_text().splitlines())
    assert len(ran) == 4
    assert ran["test_cdc_a"] == ran["test_cdc_b"]
    assert ran["test_plain_a"] != ran["test_plain_b"]
