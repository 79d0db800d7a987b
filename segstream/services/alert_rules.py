"""segstream's Prometheus rule file, found and adapted: the one source of every rule.

The rules live in ``deploy/prometheus/alerts.yml`` of the source tree (recording rules the
dashboard shares, and the alerts). ``segstream services up --monitoring`` loads that file as
it is; a test that must see an alert fire within seconds loads :func:`with_for`'s copy, whose
``for:`` durations are shortened and whose expressions are exactly the file's.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from segstream.errors import ServiceError

__all__ = ["RULES_FILE", "alert_rules", "load_rules", "rules_file", "with_for", "write_rules"]

RULES_FILE = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
"""Where the rule file sits in a source checkout (an editable install points here)."""

_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
"""A Prometheus duration: ``30s``, ``1h30m``."""


def rules_file() -> Path:
    """The rule file's path.

    Raises:
        ServiceError: it is not there (segstream installed without its source tree).
    """
    if not RULES_FILE.is_file():
        raise ServiceError(
            f"the alert rules are not at {RULES_FILE}: they ship in segstream's source tree "
            "(deploy/prometheus/alerts.yml); install segstream from a checkout (pip install -e)"
        )
    return RULES_FILE


def load_rules(path: Path | None = None) -> dict[str, Any]:
    """The rule file at ``path`` (default :func:`rules_file`) as a document: ``{"groups": [...]}``.

    Raises:
        ServiceError: the file is missing or is not a Prometheus rule file.
    """
    path = path or rules_file()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ServiceError(f"cannot read the rule file {path}: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        raise ServiceError(f"{path} is not a Prometheus rule file: it has no list of groups")
    return document


def alert_rules(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every alerting rule of ``document`` (recording rules left out), in file order."""
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def with_for(document: dict[str, Any], duration: str) -> dict[str, Any]:
    """A copy of ``document`` whose every alert with a ``for:`` waits ``duration`` instead.

    Alerts without a ``for:`` (firing at the first evaluation) keep none; expressions, labels
    and annotations are untouched. ``duration`` is a Prometheus duration such as ``"3s"``.

    Raises:
        ValueError: ``duration`` is not a Prometheus duration.
    """
    if not _DURATION.match(duration):
        raise ValueError(f"{duration!r} is not a Prometheus duration (e.g. 3s, 1m, 1h30m)")
    changed = copy.deepcopy(document)
    for rule in alert_rules(changed):
        if "for" in rule:
            rule["for"] = duration
    return changed


def write_rules(document: dict[str, Any], path: Path) -> Path:
    """Write ``document`` as a rule file at ``path``; return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path
