from __future__ import annotations

from pathlib import Path

import pytest

from segstream.cli.main import main


def test_check_validates_the_file_and_names_its_destinations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "delivery.toml"
    config.write_text(
        '[[destination]]\nname = "crm"\nurl = "https://crm.example.com/x"\n'
        'secret = "a-secret-of-sixteen+"\n'
    )
    monkeypatch.setenv("SEGSTREAM_DELIVERY_CONFIG", str(config))
    assert main(["deliver", "--check"]) == 0
    out = capsys.readouterr().out
    assert "1 destination(s) valid: crm" in out and "a-secret" not in out


def test_a_missing_setting_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SEGSTREAM_DELIVERY_CONFIG", raising=False)
    assert main(["deliver"]) == 2
    assert "SEGSTREAM_DELIVERY_CONFIG is not set" in capsys.readouterr().err


def test_backfill_and_redrive_together_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "delivery.toml"
    config.write_text(
        '[[destination]]\nname = "crm"\nurl = "https://crm.example.com/x"\n'
        'secret = "a-secret-of-sixteen+"\n'
    )
    monkeypatch.setenv("SEGSTREAM_DELIVERY_CONFIG", str(config))
    assert main(["deliver", "--backfill", "crm", "--redrive"]) == 2
    assert "not both" in capsys.readouterr().err
