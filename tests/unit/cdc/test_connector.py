"""The one connector configuration: built from settings, documented key by key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from segstream.cdc.connector import (
    TABLES,
    connector_config,
    database_password,
    local_password_file,
    table_topics,
)
from segstream.cdc.fit import SHAPING_KEYS
from segstream.errors import ConfigError
from segstream.services.credentials import password_file
from segstream.settings import load_settings

DOC = Path(__file__).resolve().parents[3] / "docs" / "cdc.md"


def test_topics_are_prefix_schema_table() -> None:
    settings = load_settings(cdc_topic_prefix="acme", cdc_schema="sales")
    assert table_topics(settings) == {t: f"acme.sales.{t}" for t in TABLES}


def test_the_configuration_follows_the_settings() -> None:
    settings = load_settings(
        cdc_database_url="postgresql://reader@db.internal:6543/store",
        cdc_schema="sales",
        cdc_topic_prefix="acme",
        cdc_slot="acme_slot",
        cdc_publication="acme_pub",
        topic_partitions=12,
    )
    config = connector_config(settings, "s3cret")
    assert config["database.hostname"] == "db.internal"
    assert config["database.port"] == "6543"
    assert config["database.user"] == "reader"
    assert config["database.dbname"] == "store"
    assert config["database.password"] == "s3cret"
    assert config["table.include.list"] == (
        "sales.users,sales.orders,sales.order_items,sales.products"
    )
    assert config["message.key.columns"] == "sales.orders:user_id;sales.order_items:user_id"
    assert config["slot.name"] == "acme_slot"
    assert config["publication.name"] == "acme_pub"
    assert config["topic.creation.default.partitions"] == "12"
    assert all(isinstance(v, str) for v in config.values())


def test_the_users_key_rename_applies_to_the_users_topic_only() -> None:
    settings = load_settings()
    pattern = connector_config(settings, "x")["predicates.isUsers.pattern"]
    matched = [t for t in table_topics(settings).values() if re.fullmatch(pattern, t)]
    assert matched == ["shop.public.users"]
    assert not re.fullmatch(pattern, "shopXpublicXusers")


def test_every_setting_is_documented_in_docs_cdc() -> None:
    text = DOC.read_text()
    missing = [k for k in connector_config(load_settings(), "x") if f"`{k}`" not in text]
    assert missing == []


def test_the_checked_settings_are_settings_of_the_configuration() -> None:
    assert set(SHAPING_KEYS) <= set(connector_config(load_settings(), "x"))


def test_the_password_setting_wins_over_the_local_stack(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, cdc_database_password="given")
    assert database_password(settings) == "given"


def test_the_local_stacks_password_file_is_read(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert local_password_file(settings) == password_file(settings, "postgres-cdc")
    local_password_file(settings).parent.mkdir(parents=True)
    local_password_file(settings).write_text("from-file\n")
    assert database_password(settings) == "from-file"


def test_no_password_anywhere_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SEGSTREAM_CDC_DATABASE_PASSWORD"):
        database_password(load_settings(data_dir=tmp_path))


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u@h:1/db",
        "postgresql://u:pw@h:1/db",
        "postgresql://h:1/db",
        "postgresql://u@h:1/",
    ],
)
def test_a_bad_database_url_is_refused_by_name(url: str) -> None:
    with pytest.raises(ConfigError, match="SEGSTREAM_CDC_DATABASE_URL"):
        load_settings(cdc_database_url=url)


def test_a_bad_connect_url_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="SEGSTREAM_CONNECT_URL"):
        load_settings(connect_url="127.0.0.1:8083")
