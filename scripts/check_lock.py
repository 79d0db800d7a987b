"""Fail when the installed Python packages differ from requirements.lock.

Run by `make lint`, `make test` and `make test-unit` (the `lock-check` target) with the venv's
interpreter: `python scripts/check_lock.py [LOCK]`. Exit status 0 when the interpreter's
distributions are exactly the lock's pins (name and version; the project itself and the
installer's own tools are ignored) and every requirement segstream declares (with its `dev`
extra) is met by a locked pin; 1 otherwise, with one line per difference and the command that
fixes it.

The comparison is by normalised name (PEP 503) and the exact version string pip records.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "segstream"
# The installer's own tools live in every venv whatever the lock says: pip and setuptools come
# with `python -m venv`, wheel with older setuptools. They are not the product's dependencies.
INSTALLER_TOOLS = frozenset({"pip", "setuptools", "wheel", PROJECT})
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def parse_lock(text: str) -> dict[str, str]:
    """Map each pinned distribution of a `uv pip compile` / pip-tools lock to its version.

    Keys are canonical names (`Foo_Bar` -> `foo-bar`); hash, comment and blank lines are skipped.
    Raises ValueError on a requirement line that is not an exact `name==version` pin.
    """
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "--")):
            continue
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"not an exact pin (name==version): {line!r}")
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def installed() -> dict[str, str]:
    """Canonical name -> version of every distribution this interpreter can import."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[canonicalize_name(name)] = dist.version
    return found


def drift(locked: Mapping[str, str], present: Mapping[str, str]) -> list[str]:
    """One line per difference between the lock and the installed set (empty when identical).

    Names in INSTALLER_TOOLS are ignored on both sides.
    """
    problems: list[str] = []
    for name in sorted(set(locked) | set(present)):
        if name in INSTALLER_TOOLS:
            continue
        want, have = locked.get(name), present.get(name)
        if want == have:
            continue
        if have is None:
            problems.append(f"{name}=={want} is locked but not installed")
        elif want is None:
            problems.append(f"{name} {have} is installed but not in the lock")
        else:
            problems.append(f"{name} {have} is installed, the lock pins {want}")
    return problems


def unmet(requirements: Iterable[str], locked: Mapping[str, str]) -> list[str]:
    """The declared requirements (PEP 508 strings) that the locked pins do not satisfy.

    Requirements whose environment marker excludes this interpreter, or that belong to an
    extra other than `dev`, are skipped.
    """
    problems: list[str] = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not any(
            req.marker.evaluate({"extra": extra}) for extra in ("", "dev")
        ):
            continue
        version = locked.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req} is declared in pyproject.toml but not in the lock")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req} is declared in pyproject.toml, the lock pins {version}")
    return problems


def main(argv: list[str]) -> int:
    lock = Path(argv[1] if len(argv) > 1 else "requirements.lock")
    try:
        locked = parse_lock(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"lock check: cannot read {lock}: {exc}. Run `make lock` to write it.")
        return 1
    try:
        declared = metadata.requires(PROJECT) or []
    except metadata.PackageNotFoundError:
        print(f"lock check: {PROJECT} is not installed in this interpreter. Run `make setup`.")
        return 1
    stale = unmet(declared, locked)
    different = drift(locked, installed())
    for line in stale:
        print(f"lock check: {line}")
    if stale:
        print(f"lock check: {lock} is older than pyproject.toml's ranges. Run `make lock`.")
    for line in different:
        print(f"lock check: {line}")
    if different:
        # `make setup` alone is a no-op while its stamp file is newer than the lock.
        venv, stamp = Path(sys.prefix), Path(sys.executable).parent / ".installed"
        print(
            f"lock check: the venv {venv} differs from {lock}. Reinstall the lock with "
            f"`rm -f {stamp} && make setup`; a package installed but not locked "
            f"stays until `rm -rf {venv} && make setup`, or add it to pyproject.toml and run "
            "`make lock`."
        )
    return 1 if stale or different else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
