"""A throwaway PostgreSQL server for the training tests: one per session, on a free port.

Debian's ``postgresql`` binaries (``/usr/lib/postgresql/<version>/bin``) initialise a cluster in
a temporary directory and ``pg_ctl`` starts it on 127.0.0.1 and a free port; it is stopped at
the end of the session, even when tests fail. PostgreSQL refuses to run as root, so as root the
cluster belongs to the ``postgres`` user and its commands run through ``runuser``.

The cluster's default collation is ICU's English ("en"), a linguistic order in which
``'a' < 'B'`` and ``'e' < 'É'``; the feature SQL must still give byte-order ties there, which
is what its ``COLLATE "C"`` is for.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port
from tests.waiting import wait_until

_USER = "segstream"


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        message = "PostgreSQL is not installed (Debian package postgresql; see make system-deps)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return Path(found[-1]).parent


def _as_owner(command: list[str]) -> list[str]:
    """Run as the ``postgres`` user when we are root (PostgreSQL will not run as root)."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str], log: Path) -> None:
    done = subprocess.run(_as_owner(command), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"{command[0]} failed: {done.stderr or done.stdout}\n{tail}")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty PostgreSQL database (psycopg 3 driver)."""
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="segstream-pg-"))
    data, log = root / "data", root / "server.log"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    _run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            _USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale-provider=icu",
            "--icu-locale=en",
            "--locale=C.UTF-8",
        ],
        log,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    _run(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "start",
        ],
        log,
    )
    try:
        wait_until(lambda: _listening(port), 30, f"PostgreSQL never listened on port {port}")
        yield f"postgresql+psycopg://{_USER}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)
