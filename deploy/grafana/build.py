"""Build deploy/grafana/segstream.json, segstream's Grafana dashboard, with grafana-foundation-sdk.

    python deploy/grafana/build.py          # write the dashboard next to this script
    python deploy/grafana/build.py --check  # exit 1 when the committed file is not what this builds

The panels query the recording rules of deploy/prometheus/alerts.yml (``segstream:*``), the
same series the alerts read, and the worker's own series where no rule is shared. The data
source is a dashboard variable, so the file imports as is into any Grafana with a Prometheus
data source. ``tests/unit/deploy/test_dashboard.py`` holds the committed file to this script,
and ``tests/integration/stream/monitoring/`` every query to a live worker's ``/metrics``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as gc
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableHide

OUTPUT = Path(__file__).resolve().with_name("segstream.json")
"""The committed dashboard."""

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
"""Every panel's data source: the dashboard's ``datasource`` variable (any Prometheus)."""


def _query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).range()


def _series(
    title: str,
    unit: str,
    queries: list[tuple[str, str]],
    *,
    description: str,
    stacked: bool = False,
    width: int = 12,
) -> timeseries.Panel:
    """A time-series panel of ``queries`` (expression, legend), ``unit`` a Grafana unit id."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .height(8)
        .span(width)
        .fill_opacity(10)
        .legend(
            gc.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    if stacked:
        panel = panel.stacking(gc.StackingConfig().mode(common.StackingMode.NORMAL)).fill_opacity(
            40
        )
    for i, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + i)))
    return panel


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (a plain document, ready for ``json.dumps``)."""
    board = (
        gd.Dashboard("segstream")
        .uid("segstream")
        .description(
            "Throughput, lag, latency, errors, webhook delivery and segments of segstream "
            "(deploy/prometheus/alerts.yml's recording rules; runbook: docs/operations.md)"
        )
        .tags(["segstream", "kafka", "redis"])
        .time("now-6h", "now")
        .refresh("30s")
        .editable()
        .with_variable(
            gd.DatasourceVariable("datasource")
            .label("Prometheus")
            .type("prometheus")
            .hide(VariableHide.DONT_HIDE)
        )
        .with_row(gd.Row("Flow"))
        .with_panel(
            _series(
                "Throughput",
                "ops",
                [
                    ("segstream:events_consumed:rate5m", "{{topic}} records/s"),
                    ("segstream:segment_changes:rate5m", "segment changes/s"),
                ],
                description="Input records consumed per topic and segment changes published, "
                "per second (5 min rate, all workers).",
            )
        )
        .with_panel(
            _series(
                "Batch latency",
                "s",
                [
                    ("segstream:batch_processing_seconds:p50_5m", "p50"),
                    ("segstream:batch_processing_seconds:p99_5m", "p99"),
                ],
                description="Wall time of one batch, end to end (validate, Redis, assign, "
                "publish), over 5 minutes of every worker's batches.",
            )
        )
        .with_panel(
            _series(
                "Lag, records",
                "short",
                [("segstream:consumer_lag_messages:max", "{{topic}}[{{partition}}]")],
                description="Records of each input partition the worker group has not "
                "processed yet.",
            )
        )
        .with_panel(
            _series(
                "Lag, seconds",
                "s",
                [("segstream:consumer_lag_seconds:max", "{{topic}}[{{partition}}]")],
                description="Age of the oldest unprocessed record of each input partition; "
                "0 when caught up (alert: SegstreamLagHigh).",
            )
        )
        .with_row(gd.Row("Errors"))
        .with_panel(
            _series(
                "Dead letters by reason",
                "ops",
                [("segstream:dead_letters:rate5m", "{{reason}}")],
                description="Inputs rejected per second, by reason code (alert: "
                "SegstreamDeadLetters).",
                stacked=True,
            )
        )
        .with_panel(
            _series(
                "Redis errors and WAIT timeouts",
                "ops",
                [
                    ("segstream:redis_errors:rate5m", "errors {{instance}}"),
                    ("segstream:redis_wait_timeouts:rate5m", "WAIT timeouts {{instance}}"),
                ],
                description="Failed Redis calls (retried) and write steps whose WAIT saw too "
                "few replicas, per second and worker.",
            )
        )
        .with_panel(
            _series(
                "Readiness",
                "short",
                [("min by (instance, check) (segstream_ready)", "{{instance}} {{check}}")],
                description="1 while each /readyz check of each worker passes, 0 while it "
                "fails (alert: SegstreamWorkerNotReady).",
            )
        )
        .with_panel(
            _series(
                "Stalls",
                "short",
                [("sum by (kind) (increase(segstream_stalls_total[5m]))", "{{kind}}")],
                description="Batches or commits that overran their deadline, per 5 minutes "
                "(alert: SegstreamStalled).",
            )
        )
        .with_row(gd.Row("Delivery"))
        .with_panel(
            _series(
                "Delivery backlog",
                "short",
                [("segstream:delivery_backlog_messages:max", "{{destination}}")],
                description="Changes not yet acknowledged by each webhook destination, read "
                "from Kafka by the deliver processes (alert: SegstreamDeliveryBacklogGrowing).",
            )
        )
        .with_panel(
            _series(
                "Delivered changes",
                "ops",
                [("segstream:delivery_delivered:rate5m", "{{destination}}")],
                description="Changes acknowledged per second by each destination (5 min rate).",
            )
        )
        .with_panel(
            _series(
                "Delivery latency, p99",
                "s",
                [
                    ("segstream:delivery_latency_seconds:p99_5m", "{{destination}}"),
                    (
                        "histogram_quantile(0.99, sum by (destination, le) "
                        "(rate(segstream_delivery_request_seconds_bucket[5m])))",
                        "{{destination}}, one POST",
                    ),
                ],
                description="Change published to Kafka until the destination acknowledged "
                "it, and the wall time of one POST; 99th percentiles over 5 minutes.",
            )
        )
        .with_panel(
            _series(
                "Delivery retries and dead letters",
                "short",
                [
                    ("segstream:delivery_retries:rate5m", "{{destination}} retry {{reason}} /s"),
                    ("segstream:delivery_failed:increase10m", "{{destination}} dead-lettered"),
                ],
                description="POSTs retried per second by reason, and changes dead-lettered "
                "per 10 minutes (alert: SegstreamDeliveryDeadLetters).",
            )
        )
        .with_row(gd.Row("Segments"))
        .with_panel(
            _series(
                "Segment populations",
                "short",
                [("segstream:segment_population:max", "{{model_version}} segment {{segment}}")],
                description="Users per segment and model version (alert: "
                "SegstreamSegmentCollapsing).",
                stacked=True,
            )
        )
        .with_panel(
            _series(
                "Drift distance",
                "short",
                [
                    (
                        "max by (model_version, segment) (segstream_drift_distance)",
                        "{{model_version}} segment {{segment}}",
                    )
                ],
                description="Distance of each drifted centre from its trained position, in "
                "PCA units (drift mode only).",
            )
        )
        .with_panel(
            stat.Panel()
            .title("Model version")
            .description("The model version each worker assigns with.")
            .datasource(DATASOURCE)
            .height(4)
            .span(24)
            .text_mode(common.BigValueTextMode.NAME)
            .graph_mode(common.BigValueGraphMode.NONE)
            .reduce_options(gc.ReduceDataOptions().calcs(["lastNotNull"]))
            .with_target(_query("count by (version) (segstream_model_info)", "{{version}}"))
        )
    )
    document: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    # Grafana wants a unique id per panel (links, "view panel"); the builder leaves them out.
    for number, panel in enumerate(document["panels"], start=1):
        panel["id"] = number
    return document


def render() -> str:
    """The dashboard file's text: the document, indented, with a final newline."""
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write :data:`OUTPUT`, or with ``--check`` compare it with what :func:`build` makes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is not what build.py makes: run python {__file__}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
