"""The JVM class archive: made at a clean exit, published once its JVM is gone, then used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from segstream.services.class_archive import archive_options, archive_path
from tests.waiting import wait_until


def _pending(options: list[str]) -> Path:
    (option,) = options
    flag, _, path = option.partition("=")
    assert flag == "-XX:ArchiveClassesAtExit"
    return Path(path)


def test_without_an_archive_only_a_creating_jvm_gets_an_option(tmp_path: Path) -> None:
    archive = tmp_path / "classes-x.jsa"
    assert archive_options(archive, create=False) == []
    first, second = (_pending(archive_options(archive, create=True)) for _ in range(2))
    assert first != second  # each JVM writes a file of its own
    assert first.parent == tmp_path and first.name.startswith("classes-x.jsa.")
    assert not archive.exists()


def test_a_finished_archive_is_published_once_and_then_used(tmp_path: Path) -> None:
    archive = tmp_path / "classes-x.jsa"
    written = [_pending(archive_options(archive, create=True)) for _ in range(2)]
    for number, path in enumerate(written):
        path.write_bytes(b"archive %d" % number)  # as HotSpot does at the JVM's exit
    assert archive_options(archive, create=False) == [f"-XX:SharedArchiveFile={archive}"]
    assert archive.read_bytes() in (b"archive 0", b"archive 1")
    assert sorted(tmp_path.iterdir()) == [archive]  # the other finished one is removed
    assert archive_options(archive, create=True) == [f"-XX:SharedArchiveFile={archive}"]


def test_an_archive_whose_jvm_still_runs_is_left_to_it(tmp_path: Path) -> None:
    archive = tmp_path / "classes-x.jsa"
    pending = _pending(archive_options(archive, create=True))
    pending.write_bytes(b"half written")
    # A process naming the file in its command line, as the JVM writing it does.
    jvm = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", f"-XX:ArchiveClassesAtExit={pending}"]
    )
    try:
        # Until the child has exec'd, its command line is this process's (or empty).
        cmdline = Path(f"/proc/{jvm.pid}/cmdline")
        wait_until(lambda: str(pending).encode() in cmdline.read_bytes(), 30, "the child's exec")
        assert _pending(archive_options(archive, create=True)) != pending
        assert not archive.exists() and pending.exists()
    finally:
        jvm.kill()
        jvm.wait()
    assert archive_options(archive, create=False) == [f"-XX:SharedArchiveFile={archive}"]


def test_the_archive_is_named_after_the_java_build(tmp_path: Path) -> None:
    java = tmp_path / "java"
    java.write_text("")
    os.utime(java, ns=(1_000, 1_000))
    before = archive_path(tmp_path, str(java))
    assert archive_path(tmp_path, str(java)) == before
    os.utime(java, ns=(2_000, 2_000))  # an upgraded Java: same path, another build
    assert archive_path(tmp_path, str(java)) != before
