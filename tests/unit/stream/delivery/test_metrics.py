from __future__ import annotations

import re
from pathlib import Path

from segstream.stream.delivery.metrics import DeliveryMetrics

OPERATIONS = Path(__file__).parents[4] / "docs" / "operations.md"


def _exposed(metrics: DeliveryMetrics) -> set[str]:
    names = set()
    for family in metrics.registry.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def test_the_operations_table_lists_exactly_the_delivery_series() -> None:
    documented = set(re.findall(r"^\| `(segstream_delivery_\w+)` \|", OPERATIONS.read_text(), re.M))
    assert documented == _exposed(DeliveryMetrics(["crm"]))


def test_every_destination_has_its_series_at_zero_from_the_start() -> None:
    text = DeliveryMetrics(["crm", "recs"]).exposition().decode()
    for name in ("crm", "recs"):
        assert f'segstream_delivery_delivered_total{{destination="{name}"}} 0.0' in text
        assert f'segstream_delivery_failed_total{{destination="{name}"}} 0.0' in text
        assert f'segstream_delivery_backlog_messages{{destination="{name}"}} 0.0' in text
