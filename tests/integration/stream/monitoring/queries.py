"""What the rules and the dashboard ask of the worker: every series and label they query.

Read with a real PromQL parser (promql-parser, the Rust crate Prometheus-compatible tools use)
from the committed files themselves, so a rule or panel added later is covered without a list
to keep up. Recording rules (``segstream:*``) are followed to the series they are built from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import promql_parser

from segstream.services.alert_rules import RULES_FILE, load_rules

DASHBOARD = Path(__file__).resolve().parents[4] / "deploy" / "grafana" / "segstream.json"

_TEMPLATE_LABEL = re.compile(r"\{\{\s*\$?labels\.(\w+)|\{\{\s*(\w+)\s*\}\}")
"""``{{ $labels.x }}`` in an annotation, ``{{x}}`` in a legend format."""


@dataclass
class Query:
    """One expression of a rule or panel: where it is, and what it reads."""

    where: str
    expr: str
    series: set[str] = field(default_factory=set)
    """Series names selected (recording rules included)."""
    labels: set[str] = field(default_factory=set)
    """Label names it matches, groups or joins on, or prints."""
    made: set[str] = field(default_factory=set)
    """Labels it creates itself (``label_replace``'s destination)."""


def read(where: str, expr: str, shown: str = "") -> Query:
    """Parse ``expr``; ``shown`` is the text its result is printed with (legend, annotation)."""
    query = Query(where, expr)

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                query.series.add(node.name)
            query.labels.update(m.name for m in node.matchers.matchers if m.name != "__name__")
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            query.labels.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                query.labels.update(node.modifier.matching.labels)
            query.labels.update(node.modifier.group_labels or [])
        elif isinstance(node, promql_parser.Call) and node.func.name == "label_replace":
            query.made.add(node.args[1].val)
            query.labels.add(node.args[3].val)

    promql_parser.walk(promql_parser.parse(expr), visit)
    for match in _TEMPLATE_LABEL.finditer(shown):
        query.labels.add(match.group(1) or match.group(2))
    return query


def recording_rules() -> dict[str, Query]:
    """The rule file's recording rules by the name they record."""
    return {
        rule["record"]: read(f"{RULES_FILE.name}: {rule['record']}", rule["expr"])
        for group in load_rules()["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def alert_queries() -> Iterator[Query]:
    """Each alert's expression, with its annotations' templated labels."""
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                shown = " ".join(rule.get("annotations", {}).values())
                yield read(f"{RULES_FILE.name}: {rule['alert']}", rule["expr"], shown)


def dashboard_queries() -> Iterator[Query]:
    """Each panel target's expression, with its legend's labels."""
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            where = f"{DASHBOARD.name}: {panel['title']}"
            yield read(where, target["expr"], target.get("legendFormat", ""))


def resolved(query: Query, rules: dict[str, Query]) -> Query:
    """``query`` with each recording rule it reads replaced by what that rule reads."""
    out = Query(query.where, query.expr, set(), set(query.labels), set(query.made))
    for name in query.series:
        if name in rules:
            inner = resolved(rules[name], rules)
            out.series |= inner.series
            out.labels |= inner.labels
            out.made |= inner.made
        else:
            out.series.add(name)
    return out
