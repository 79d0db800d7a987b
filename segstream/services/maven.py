"""Jars resolved once from Maven Central by a bundled pom, cached in a folder of their own.

The broker (``kafka-pom.xml``), the Connect runtime (``connect-pom.xml``) and the Debezium
connector (``debezium-pom.xml``) are each one pom that nothing builds: ``mvn
dependency:copy-dependencies`` copies its runtime dependencies into the cache folder, and a
``.complete`` marker written last says the folder is whole (an interrupted copy is resumed).
Processes resolving the same folder at once (parallel test workers on a fresh machine, two
``services up``) take turns on a lock file beside it: one copies, the others find it whole.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
from collections.abc import Sequence
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from segstream.errors import ServiceError

__all__ = ["bundled_pom", "pom_property", "resolve_jars"]


def bundled_pom(name: str) -> Traversable:
    """The pom file ``name`` shipped beside this module."""
    return resources.files("segstream.services").joinpath(name)


def pom_property(pom: Traversable, name: str) -> str:
    """The value of ``<name>`` in the pom's ``<properties>``, e.g. the Kafka version.

    Raises:
        ServiceError: the pom has no such property.
    """
    match = re.search(rf"<{re.escape(name)}>([^<]+)</{re.escape(name)}>", pom.read_text())
    if match is None:  # pragma: no cover - the poms ship with the package
        raise ServiceError(f"{pom.name} has no <{name}> property")
    return match.group(1)


def resolve_jars(
    pom: Traversable, into: Path, what: str, *, exclude_groups: Sequence[str] = ()
) -> Path:
    """Copy the runtime dependencies of ``pom`` into ``into``, once; returns ``into``.

    ``what`` names them in messages (``"Kafka 4.1.1"``); ``exclude_groups`` are Maven group
    ids left out (a Connect plugin leaves out Kafka's own, which the runtime provides).

    Raises:
        ServiceError: Maven is missing or the resolution failed (with Maven's output).
    """
    done = into / ".complete"
    if done.exists():
        return into
    into.parent.mkdir(parents=True, exist_ok=True)
    with (into.parent / f".{into.name}.lock").open("a") as lock:
        # Blocks while another process copies into the same folder (minutes on first use).
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            _copy_dependencies(pom, into, what, exclude_groups)
    return into


def _copy_dependencies(
    pom: Traversable, into: Path, what: str, exclude_groups: Sequence[str]
) -> None:
    """Run Maven's ``copy-dependencies`` of ``pom`` into ``into``; mark it complete."""
    done = into / ".complete"
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(f"Maven (mvn) is needed once to fetch {what}: apt-get install maven")
    into.mkdir(parents=True, exist_ok=True)
    excludes = [f"-DexcludeGroupIds={','.join(exclude_groups)}"] if exclude_groups else []
    with resources.as_file(pom) as pom_file:
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom_file),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={into}",
                "-DincludeScope=runtime",
                *excludes,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise ServiceError(
            f"Maven could not resolve {what}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    done.touch()
