"""Test data built once per test run and read by every pytest-xdist worker of it.

Each xdist worker is a pytest session of its own, so a session fixture that generates and
trains a dataset would do it once per worker: minutes of CPU repeated on a 2-core machine.
:func:`built_once` builds a folder once for the whole run instead: the first worker to need
it builds it while holding a lock file, the others block on the lock and then read the
finished folder. The folder lives under the run's base temporary folder, which the workers
share (``pytest-<n>/``, holding each worker's ``popen-gw<i>/``), so a new run builds afresh
and pytest's own clean-up of old runs removes it.

What is built is read-only by contract: a test that changes it must copy it first (as the
model lifecycle tests copy their models folder), since the other workers read it meanwhile.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

__all__ = ["COMPLETE", "built_once", "shared_root"]

COMPLETE = ".complete"
"""The marker written into a folder once its build returned: a folder without it is a build
that failed or was interrupted half-way, and is built again."""


def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``shared/`` in the folder every worker of this run can see: the base temporary
    folder's parent on an xdist worker (the controller's base folder, unique to the run),
    else the base folder itself."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"


def built_once(root: Path, key: str, build: Callable[[Path], None]) -> Path:
    """The folder ``root/<key>`` (``root`` being a :func:`shared_root`), filled by
    ``build(folder)`` exactly once per run however many workers ask; returns it once
    complete.

    ``key`` must name everything the content depends on (sizes, seeds, k), so that two
    fixtures building different content never share a folder. ``build`` is given a folder
    that does not exist yet and must create it. Concurrent callers block on a lock file until
    the first one's build is done; if that build raised, the next caller builds again (and
    most likely raises the same error in its own worker, which is reported there).
    """
    folder = root / key
    if (folder / COMPLETE).exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".{key}.lock").open("a") as lock:
        # Blocks while another worker builds the same folder (a minute for the stream's data).
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / COMPLETE).exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half-way
            build(folder)
            (folder / COMPLETE).touch()
    return folder
