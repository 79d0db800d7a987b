"""``segstream demo --cdc`` and ``segstream bench cdc`` refuse bad options before starting
anything, naming the option."""

from __future__ import annotations

import pytest

from segstream.cli.main import main


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["demo", "--cdc", "--shop-rate", "0"], "--shop-rate"),
        (["demo", "--cdc", "--shop-seconds", "-1"], "--shop-seconds"),
        (["demo", "--cdc", "--rate", "50"], "--shop-rate"),
        (["demo", "--cdc", "--users", "3"], "--users"),
        (["bench", "cdc", "--users", "5"], "--users"),
        (["bench", "cdc", "--rate", "0"], "--rate"),
        (["bench", "cdc", "--json-users", "-1"], "--json-users"),
    ],
)
def test_a_bad_option_is_refused_by_name(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert named in captured.err
    assert "Traceback" not in captured.err + captured.out
