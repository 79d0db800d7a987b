"""Jars resolved once into a shared cache, by one process at a time."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import pytest

from segstream.errors import ServiceError
from segstream.services.maven import bundled_pom, resolve_jars
from tests.waiting import wait_until

FAKE_MVN = """#!/bin/sh
# Stands in for Maven: records its call and "copies" one jar where it was asked to.
echo "$@" >> "{calls}"
for arg in "$@"; do
  case "$arg" in -DoutputDirectory=*) touch "${{arg#-DoutputDirectory=}}/some.jar";; esac
done
"""


@pytest.fixture
def fake_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``mvn`` on PATH that records each call in the returned file."""
    calls = tmp_path / "mvn-calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "mvn"
    script.write_text(FAKE_MVN.format(calls=calls))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def _waiters(lock_file: Path) -> int:
    """Processes or threads blocked on a lock of ``lock_file`` (Linux's /proc/locks)."""
    inode = f":{lock_file.stat().st_ino} "
    return sum(
        1 for line in Path("/proc/locks").read_text().splitlines() if "->" in line and inode in line
    )


def test_a_complete_cache_is_used_without_maven(tmp_path: Path, fake_mvn: Path) -> None:
    into = tmp_path / "cache" / "4.1.1"
    assert resolve_jars(bundled_pom("kafka-pom.xml"), into, "Kafka") == into
    assert (into / "some.jar").exists() and (into / ".complete").exists()
    resolve_jars(bundled_pom("kafka-pom.xml"), into, "Kafka")
    assert len(fake_mvn.read_text().splitlines()) == 1


def test_a_second_resolver_waits_for_the_first_and_does_not_copy_again(
    tmp_path: Path, fake_mvn: Path
) -> None:
    into = tmp_path / "cache" / "4.1.1"
    into.parent.mkdir()
    lock_file = into.parent / ".4.1.1.lock"
    errors: list[Exception] = []

    def resolve() -> None:
        try:
            resolve_jars(bundled_pom("kafka-pom.xml"), into, "Kafka")
        except (ServiceError, OSError) as exc:  # reported in the test's thread
            errors.append(exc)

    with lock_file.open("a") as first:  # another process is copying
        fcntl.flock(first, fcntl.LOCK_EX)
        second = threading.Thread(target=resolve)
        second.start()
        wait_until(lambda: _waiters(lock_file) == 1, 30, "the second resolver never waited")
        into.mkdir()
        (into / ".complete").touch()  # the first finished its copy
    second.join(30)
    assert not second.is_alive() and not errors
    assert not fake_mvn.exists(), "Maven ran again into a folder another process completed"


def test_maven_missing_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServiceError, match="apt-get install maven"):
        resolve_jars(bundled_pom("kafka-pom.xml"), tmp_path / "cache" / "x", "Kafka")
