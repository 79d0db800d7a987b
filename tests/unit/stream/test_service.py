"""What the service tells the status page about delivery, from SEGSTREAM_DELIVERY_CONFIG."""

from __future__ import annotations

from pathlib import Path

from segstream.settings import load_settings
from segstream.stream.service import delivery_groups

CONFIG = """
[[destination]]
name = "crm"
url = "https://crm.example.com/hooks"
secret_env = "NOT_SET_WHERE_THE_WORKER_RUNS"

[[destination]]
name = "recs"
url = "http://127.0.0.1:9000/in"
secret = "0123456789abcdef-secret"
"""


def test_no_config_means_no_delivery_section() -> None:
    assert delivery_groups(load_settings(delivery_config=None)) is None


def test_each_destination_is_watched_in_its_group_without_its_secret(tmp_path: Path) -> None:
    path = tmp_path / "delivery.toml"
    path.write_text(CONFIG)
    settings = load_settings(delivery_config=path, app_id="shop")
    groups = delivery_groups(settings)
    assert groups is not None and groups.error is None
    assert groups.destinations == (("crm", "shop-deliver-crm"), ("recs", "shop-deliver-recs"))
    assert groups.redrive_group == "shop-deliver-redrive"
    assert groups.dead_letter_topic == settings.topic_delivery_dead_letters
    assert groups.config == str(path)
    assert groups.destination_of is not None
    assert groups.destination_of(b'{"destination": "crm", "more": 1}') == "crm"


def test_a_config_that_cannot_be_read_is_shown_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    groups = delivery_groups(load_settings(delivery_config=path))
    assert groups is not None and groups.destinations == ()
    assert groups.error is not None and str(path) in groups.error
    assert "cannot be read" in groups.error
