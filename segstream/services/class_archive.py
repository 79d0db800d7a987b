"""A class-data-sharing archive of a JVM's classes, made once per jar set and Java build.

A JVM that maps an archive of the classes it needs (HotSpot's AppCDS) skips loading, parsing
and verifying them at start-up. Measured on a lone local broker: ready after 1.7 CPU-s
instead of 2.9, its storage formatted with 0.7 instead of 1.2 (docs/testing.md).

How an archive comes to be, with no step of its own:

1. While there is none, a JVM started with ``create=True`` runs with
   ``-XX:ArchiveClassesAtExit=<archive>.<random>.tmp``: when it exits cleanly, HotSpot writes
   the classes it loaded there. A JVM that is killed writes nothing.
2. A later call finds that file, sees that no running process names it any more (so its
   JVM has finished writing), and moves it into place; when several JVMs wrote one, the
   first found wins and the others are removed.
3. From then on every JVM of that jar set runs with ``-XX:SharedArchiveFile=<archive>``.

HotSpot checks an archive against the class path and its own build and runs without one
that does not match, so a stale archive costs the saving, never the start. The archive's
name carries the Java build (the resolved ``java`` binary and its modification time), so an
upgraded Java makes a new one instead of ignoring the old one for ever.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path

from segstream.services.process import command_line

__all__ = ["archive_options", "archive_path"]

_SUFFIX = ".tmp"


def archive_path(directory: Path, java: str) -> Path:
    """The archive of the jars in ``directory`` for the Java build of the binary ``java``."""
    binary = Path(java).resolve()
    build = f"{binary}:{binary.stat().st_mtime_ns}"
    return directory / f"classes-{hashlib.sha256(build.encode()).hexdigest()[:12]}.jsa"


def archive_options(archive: Path, *, create: bool) -> list[str]:
    """JVM options that use ``archive``, or (``create``) make it at this JVM's clean exit.

    Without ``create`` and with no archive yet: no option (the JVM runs as it would).
    """
    _publish_finished(archive)
    if archive.is_file():
        return [f"-XX:SharedArchiveFile={archive}"]
    if not create:
        return []
    pending = archive.with_name(f"{archive.name}.{uuid.uuid4().hex}{_SUFFIX}")
    return [f"-XX:ArchiveClassesAtExit={pending}"]


def _publish_finished(archive: Path) -> None:
    """Move a finished pending archive into place (atomically); remove the other finished ones."""
    pending = sorted(archive.parent.glob(f"{archive.name}.*{_SUFFIX}"))
    if not pending:
        return
    writing = _running_command_lines()
    for candidate in pending:
        if str(candidate) in writing:
            continue  # its JVM still runs: it writes the file when it exits
        with contextlib.suppress(OSError):  # another process moved or removed it first
            if archive.exists():
                candidate.unlink()
            else:
                os.replace(candidate, archive)


def _running_command_lines() -> str:
    """Every running process's command line, joined (Linux ``/proc``)."""
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return "\n".join(filter(None, (command_line(pid) for pid in pids)))
