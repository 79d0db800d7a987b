from __future__ import annotations

from pathlib import Path

import pytest

from segstream.stream.delivery.config import (
    DeliveryConfigError,
    destination_names,
    load_delivery_config,
)

GOOD = """
[[destination]]
name = "crm"
url = "https://crm.example.com/hooks"
secret = "0123456789abcdef-secret"
batch_size = 50
headers = { "X-Team" = "growth" }

[[destination]]
name = "recs"
url = "http://127.0.0.1:9000/in"
secret_env = "RECS_SECRET"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "delivery.toml"
    path.write_text(text)
    return path


def test_a_valid_file_gives_each_destination_with_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECS_SECRET", "from-the-environment-123")
    config = load_delivery_config(_write(tmp_path, GOOD))
    crm, recs = config.destinations
    assert (crm.name, crm.batch_size, crm.headers) == ("crm", 50, {"X-Team": "growth"})
    assert recs.secret.get_secret_value() == "from-the-environment-123"
    assert recs.batch_size == 100 and recs.max_attempts == 8
    assert config.named("recs") is recs
    assert "from-the-environment" not in repr(recs)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("https://crm", "ftp://crm"), "destination 'crm': field `url`"),
        (GOOD.replace('"crm"', '"CRM!"'), "field `name`"),
        (
            GOOD.replace("0123456789abcdef-secret", "short"),
            "field `secret`: Value error, must be at least 16",
        ),
        (GOOD.replace("batch_size = 50", "batch_size = 0"), "field `batch_size`"),
        (GOOD.replace("batch_size = 50", "batch_sise = 5"), "field `batch_sise`: Extra inputs"),
        (GOOD.replace('"X-Team"', '"Idempotency-Key"'), "Idempotency-Key are set by segstream"),
        (GOOD.replace('"recs"', '"crm"'), "names must be unique: ['crm']"),
        ("[[destination]\n", "is not valid TOML"),
        ("", "no [[destination]] table"),
        ('[[destinations]]\nname = "x"\n', "unknown top-level key(s) ['destinations']"),
    ],
)
def test_each_problem_names_the_file_the_destination_and_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    monkeypatch.setenv("RECS_SECRET", "from-the-environment-123")
    path = _write(tmp_path, text)
    with pytest.raises(DeliveryConfigError) as caught:
        load_delivery_config(path)
    assert str(caught.value).startswith(str(path))
    assert expected in str(caught.value)
    assert "0123456789abcdef" not in str(caught.value)


def test_an_unset_secret_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECS_SECRET", raising=False)
    with pytest.raises(DeliveryConfigError, match=r"destination 'recs'.*'RECS_SECRET' is not set"):
        load_delivery_config(_write(tmp_path, GOOD))


def test_no_setting_and_no_file_say_which_setting(tmp_path: Path) -> None:
    with pytest.raises(DeliveryConfigError, match="SEGSTREAM_DELIVERY_CONFIG is not set"):
        load_delivery_config(None)
    with pytest.raises(DeliveryConfigError, match="cannot be read"):
        load_delivery_config(tmp_path / "missing.toml")


def test_an_unknown_destination_lists_the_known_ones(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RECS_SECRET", "from-the-environment-123")
    config = load_delivery_config(_write(tmp_path, GOOD))
    with pytest.raises(DeliveryConfigError, match=r"no destination named 'x' \(known: crm, recs\)"):
        config.named("x")


class TestDestinationNames:
    def test_the_names_are_read_without_any_secret_in_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("RECS_SECRET", raising=False)
        assert destination_names(_write(tmp_path, GOOD)) == ("crm", "recs")

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (GOOD.replace('"crm"', '"CRM!"'), "destination #1: field `name`"),
            (GOOD.replace('name = "crm"', ""), "destination #1: field `name`"),
            (GOOD.replace('"recs"', '"crm"'), "names must be unique: ['crm']"),
            ("", "no [[destination]] table"),
        ],
    )
    def test_a_bad_name_or_file_is_named(self, tmp_path: Path, text: str, expected: str) -> None:
        path = _write(tmp_path, text)
        with pytest.raises(DeliveryConfigError) as caught:
            destination_names(path)
        assert str(caught.value).startswith(str(path))
        assert expected in str(caught.value)

    def test_an_unset_path_names_the_setting(self) -> None:
        with pytest.raises(DeliveryConfigError, match="SEGSTREAM_DELIVERY_CONFIG is not set"):
            destination_names(None)
