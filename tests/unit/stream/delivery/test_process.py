from __future__ import annotations

import asyncio

import aiohttp

from segstream.settings import load_settings
from segstream.stream.delivery.metrics import DeliveryMetrics
from segstream.stream.delivery.process import _serve, status_page
from tests.ports import free_port


def test_metrics_and_status_are_served_per_destination() -> None:
    async def scrape() -> tuple[str, dict]:
        settings = load_settings(delivery_http_port=free_port())
        metrics = DeliveryMetrics(["crm"])
        metrics.delivered.labels("crm").inc(3)
        metrics.backlog.labels("crm").set(7)
        runner = await _serve(settings, [], metrics)
        assert runner is not None
        base = f"http://{settings.http_host}:{settings.delivery_http_port}"
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/metrics") as response:
                    text = await response.text()
                async with session.get(f"{base}/status") as response:
                    status = await response.json()
                async with session.get(f"{base}/") as response:
                    assert response.content_type == "text/html"
                    assert "segstream deliver" in await response.text()
        finally:
            await runner.cleanup()
        return text, status

    text, status = asyncio.run(scrape())
    assert 'segstream_delivery_delivered_total{destination="crm"} 3.0' in text
    assert 'segstream_delivery_backlog_messages{destination="crm"} 7.0' in text
    assert status == {"destinations": []}


def test_no_server_on_port_zero() -> None:
    runner = asyncio.run(_serve(load_settings(delivery_http_port=0), [], DeliveryMetrics([])))
    assert runner is None


def test_the_status_page_is_a_table_of_the_destinations_with_every_value_escaped() -> None:
    page = status_page(
        {
            "destinations": [
                {"name": "crm", "url_host": "<crm>", "delivered": 12, "dead_lettered": 0,
                 "backlog": 3},
            ]
        }
    )  # fmt: skip
    assert "<td>crm</td><td>&lt;crm&gt;</td><td>12</td><td>0</td><td>3</td>" in page
    assert "<crm>" not in page
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "no destination" in status_page({"destinations": []})
