"""The rule file's loader and its test-only ``for:`` override."""

from __future__ import annotations

from pathlib import Path

import pytest

from segstream.errors import ServiceError
from segstream.services.alert_rules import (
    alert_rules,
    load_rules,
    rules_file,
    with_for,
    write_rules,
)


def test_the_override_changes_only_the_for_windows() -> None:
    original = load_rules()
    fast = with_for(original, "3s")
    before, after = alert_rules(original), alert_rules(fast)
    assert [r["alert"] for r in after] == [r["alert"] for r in before]
    for old, new in zip(before, after, strict=True):
        assert new.get("for") == ("3s" if "for" in old else None)
        assert {k: v for k, v in new.items() if k != "for"} == {
            k: v for k, v in old.items() if k != "for"
        }
    assert any("for" not in r for r in after)  # alerts without a window stay without
    assert alert_rules(load_rules()) == before  # the original is not modified


def test_a_written_copy_reads_back_the_same(tmp_path: Path) -> None:
    fast = with_for(load_rules(), "1s")
    assert load_rules(write_rules(fast, tmp_path / "rules.yml")) == fast


@pytest.mark.parametrize("duration", ["3", "soon", "-1s", ""])
def test_a_bad_duration_is_refused_by_value(duration: str) -> None:
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        with_for(load_rules(), duration)


def test_a_file_that_is_no_rule_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text("- just a list\n")
    with pytest.raises(ServiceError, match=f"{path} is not a Prometheus rule file"):
        load_rules(path)


def test_the_rule_file_is_found_in_the_source_tree() -> None:
    assert rules_file().name == "alerts.yml" and rules_file().parent.name == "prometheus"
