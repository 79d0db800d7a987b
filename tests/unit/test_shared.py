"""tests/shared.py: a folder built once per run, however many processes ask at once."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import os
from pathlib import Path

import pytest

from tests.shared import COMPLETE, built_once, shared_root

WORKERS = 4


def _build(folder: Path) -> None:
    """A build that leaves its builder's pid in the folder and in a log beside it."""
    folder.mkdir()
    (folder / "content.txt").write_text(str(os.getpid()))
    with (folder.parent / "builds.log").open("a") as log:
        log.write(f"{os.getpid()}\n")


def _ask(root: Path, start: multiprocessing.synchronize.Barrier, out: Path) -> None:
    """One worker: wait for the others, then ask for the folder and record what it read."""
    start.wait(60)
    folder = built_once(root, "data", _build)
    out.write_text((folder / "content.txt").read_text())


def test_concurrent_workers_build_once_and_all_read_the_same_folder(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    context = multiprocessing.get_context("fork")
    start = context.Barrier(WORKERS)
    outs = [tmp_path / f"read-{i}" for i in range(WORKERS)]
    processes = [context.Process(target=_ask, args=(root, start, out)) for out in outs]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0

    builders = (root / "builds.log").read_text().split()
    assert len(builders) == 1
    assert {out.read_text() for out in outs} == set(builders)
    assert (root / "data" / COMPLETE).exists()


def test_a_complete_folder_is_not_built_again(tmp_path: Path) -> None:
    first = built_once(tmp_path, "data", _build)
    again = built_once(tmp_path, "data", _build)
    assert again == first
    assert (tmp_path / "builds.log").read_text().split() == [str(os.getpid())]


def test_a_build_that_failed_half_way_is_removed_and_built_again(tmp_path: Path) -> None:
    def failing(folder: Path) -> None:
        folder.mkdir()
        (folder / "half.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        built_once(tmp_path, "data", failing)
    assert not (tmp_path / "data" / COMPLETE).exists()

    folder = built_once(tmp_path, "data", _build)
    assert sorted(p.name for p in folder.iterdir()) == [COMPLETE, "content.txt"]


def test_different_keys_are_different_folders(tmp_path: Path) -> None:
    one = built_once(tmp_path, "users-20000-seed-7", _build)
    other = built_once(tmp_path, "users-6000-seed-11", _build)
    assert one != other
    assert len((tmp_path / "builds.log").read_text().split()) == 2


def test_the_shared_root_is_the_runs_folder_on_an_xdist_worker_and_the_sessions_otherwise(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    assert shared_root(tmp_path_factory) == base.parent / "shared"
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert shared_root(tmp_path_factory) == base / "shared"
