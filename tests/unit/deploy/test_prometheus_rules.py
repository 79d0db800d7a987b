"""deploy/prometheus/alerts.yml: valid for Prometheus, unit-tested by promtool, each alert
complete (severity, summary, runbook) and tested both ways."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from segstream.services.alert_rules import RULES_FILE, alert_rules, load_rules

REPO = Path(__file__).resolve().parents[3]
RULE_TESTS = RULES_FILE.with_name("alerts.test.yml")
OPERATIONS = REPO / "docs" / "operations.md"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: `make setup` installs Debian's prometheus package"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False)


def test_promtool_accepts_the_rule_file() -> None:
    done = promtool("check", "rules", str(RULES_FILE))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_promtool_unit_test_of_the_rules_passes() -> None:
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


ALERTS = alert_rules(load_rules())


@pytest.mark.parametrize("rule", ALERTS, ids=[r["alert"] for r in ALERTS])
def test_each_alert_has_a_severity_a_summary_and_a_runbook_section(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning"}
    annotations = rule["annotations"]
    assert annotations["summary"] and annotations["description"]
    # The summary names what is affected: a partition, a worker, a shard, a reason, a segment.
    assert "{{ $labels." in annotations["summary"]
    page, _, anchor = annotations["runbook_url"].partition("#")
    assert page == "docs/operations.md"
    assert anchor == rule["alert"].lower()
    assert anchor in _anchors(OPERATIONS.read_text()), f"no runbook section {rule['alert']}"


def _cases() -> dict[str, list[list[Any]]]:
    """Per alert name, the expected-alert lists of its promtool test cases."""
    cases: dict[str, list[list[Any]]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
    return cases


@pytest.mark.parametrize("rule", ALERTS, ids=[r["alert"] for r in ALERTS])
def test_each_alert_is_tested_firing_and_with_series_that_must_stay_silent(
    rule: dict[str, Any],
) -> None:
    cases = _cases().get(rule["alert"])
    assert cases, f"{rule['alert']} has no promtool test"
    assert any(cases), f"{rule['alert']} is never shown firing"
    # promtool compares the whole list of alerts, so each case's other series (the spike, the
    # restart) are proved silent when they are in the same input as a firing one. Check
    # that the tests of this alert feed it more series than the ones that fire.
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    own = [t for t in tests if any(c["alertname"] == rule["alert"] for c in t["alert_rule_test"])]
    series = sum(len(t["input_series"]) for t in own)
    firing = sum(len(c) for c in cases)
    assert series > firing, f"{rule['alert']}: no series where it must stay silent"


def test_without_the_for_windows_the_silent_series_would_page(tmp_path: Path) -> None:
    """The brief spikes and blips of the tests are silent because of the rules' ``for:``
    windows: with every window at 0 s the same tests fail."""
    from segstream.services.alert_rules import with_for, write_rules

    write_rules(with_for(load_rules(), "0s"), tmp_path / "alerts.yml")
    shutil.copy(RULE_TESTS, tmp_path / "alerts.test.yml")
    done = promtool("test", "rules", str(tmp_path / "alerts.test.yml"))
    assert done.returncode != 0
    report = done.stdout + done.stderr
    assert 'instance="w2:6066"' in report  # the Redis blip of w2 pages at once
    assert 'reason="too_large"' in report  # and so does one burst of dead letters
