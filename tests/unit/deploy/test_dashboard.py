"""deploy/grafana/segstream.json is what deploy/grafana/build.py makes, and importable as is."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import promql_parser

BUILD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "build.py"


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("segstream_dashboard_build", BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _committed() -> dict[str, Any]:
    return json.loads(_builder().OUTPUT.read_text())


def test_the_committed_dashboard_is_the_generated_one() -> None:
    builder = _builder()
    assert builder.OUTPUT.read_text() == builder.render(), "run python deploy/grafana/build.py"
    assert builder.main(["--check"]) == 0


def test_check_mode_reports_a_hand_edited_file(tmp_path: Path, monkeypatch, capsys) -> None:
    builder = _builder()
    edited = tmp_path / "segstream.json"
    edited.write_text(builder.render().replace('"Throughput"', '"Throughput!"'))
    monkeypatch.setattr(builder, "OUTPUT", edited)
    assert builder.main(["--check"]) == 1
    assert "is not what build.py makes" in capsys.readouterr().err


def test_every_panel_the_issue_asks_for_is_there() -> None:
    titles = {p["title"] for p in _committed()["panels"] if p["type"] != "row"}
    assert titles >= {
        "Throughput",
        "Lag, records",
        "Lag, seconds",
        "Batch latency",
        "Dead letters by reason",
        "Redis errors and WAIT timeouts",
        "Segment populations",
        "Model version",
        "Drift distance",
    }


def test_it_imports_into_any_grafana_with_a_prometheus_data_source() -> None:
    board = _committed()
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    (variable,) = board["templating"]["list"]
    assert (variable["type"], variable["query"], variable["name"]) == (
        "datasource",
        "prometheus",
        "datasource",
    )
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            promql_parser.parse(target["expr"])  # raises on a query Prometheus would refuse
