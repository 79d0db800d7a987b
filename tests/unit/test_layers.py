"""Imports point one way: no module imports a layer above its own, nor a sibling of its layer.

Every ``import`` and ``from … import`` of the package is read from the source (function-level
imports included), so a lazy import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "segstream"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("segstream.errors",),
    ("segstream.settings", "segstream.net", "segstream.logs"),
    ("segstream.training",),
    ("segstream.stream.domain",),
    ("segstream.stream.clients",),
    ("segstream.stream.kafka", "segstream.stream.state", "segstream.cdc"),
    ("segstream.stream.drift",),
    ("segstream.stream.sources",),
    ("segstream.stream.worker",),
    ("segstream.stream.http", "segstream.stream.lifecycle", "segstream.stream.delivery"),
    ("segstream.stream.service",),
    ("segstream.stream.main", "segstream.services"),
    ("segstream.cli",),
)
"""Lowest first. A module may import its own unit and any unit of a lower layer, nothing else:
not a higher layer, and not another unit of its own layer (siblings stay independent)."""


def unit_of(module: str) -> str | None:
    """The layer unit (a name of :data:`LAYERS`) that ``module`` belongs to, if any."""
    for layer in LAYERS:
        for unit in layer:
            if module == unit or module.startswith(unit + "."):
                return unit
    return None


def rank(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path) -> set[str]:
    """Every segstream module named by an import in ``path`` (relative imports resolved)."""
    names: set[str] = set()
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.add(node.module)
    return {name for name in names if name == "segstream" or name.startswith("segstream.")}


def violations(modules: dict[str, set[str]]) -> list[str]:
    """``importer -> imported`` pairs that break :data:`LAYERS` (pure; tested below)."""
    found = []
    for importer, targets in sorted(modules.items()):
        source = unit_of(importer)
        if source is None:
            continue
        for target in sorted(targets):
            unit = unit_of(target)
            if unit is None or unit == source:
                continue
            if rank(unit) >= rank(source):
                found.append(f"{importer} -> {target}")
    return found


def package_imports() -> dict[str, set[str]]:
    return {module_name(path): imported(path) for path in PACKAGE.rglob("*.py")}


def test_every_module_of_the_package_belongs_to_a_layer() -> None:
    unplaced = [
        name
        for name in package_imports()
        if name != "segstream" and name != "segstream.stream" and unit_of(name) is None
    ]
    assert unplaced == []


def test_no_module_imports_a_higher_layer_or_a_sibling() -> None:
    assert violations(package_imports()) == []


@pytest.mark.parametrize(
    ("importer", "target"),
    [
        ("segstream.stream.worker.processor", "segstream.stream.http.metrics"),
        ("segstream.stream.state.store", "segstream.stream.kafka.topics"),
        ("segstream.training.train", "segstream.stream.domain.events"),
        ("segstream.stream.worker.run", "segstream.services.process"),
        ("segstream.stream.lifecycle.reassign", "segstream.stream.main"),
    ],
)
def test_an_upward_or_sideways_import_is_reported(importer: str, target: str) -> None:
    assert violations({importer: {target}}) == [f"{importer} -> {target}"]


def test_a_downward_import_is_allowed() -> None:
    assert violations({"segstream.stream.http.server": {"segstream.stream.worker.app"}}) == []
