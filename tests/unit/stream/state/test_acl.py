"""The worker's ACL: every command the code sends is in it, and the docs list it."""

from __future__ import annotations

import re
from pathlib import Path

from segstream.stream.state.acl import WORKER_COMMANDS, worker_acl_rules

ROOT = Path(__file__).resolve().parents[4]


def test_every_command_of_the_lua_scripts_is_allowed() -> None:
    scripts = [*ROOT.glob("segstream/**/*.lua"), ROOT / "segstream/stream/state/populations.py"]
    called = {
        name.lower()
        for path in scripts
        for name in re.findall(r"redis\.p?call\('([A-Za-z]+)'", path.read_text())
    }
    assert called, "no script found"
    assert called <= {command for command, _ in WORKER_COMMANDS}


def test_rules_confine_the_user_to_the_apps_keys() -> None:
    rules = worker_acl_rules("shop*1")
    assert rules[:4] == ["resetkeys", "~shop\\*1:*", "resetchannels", "-@all"]
    assert "+evalsha" in rules and "+script|load" in rules
    assert not [r for r in rules if r.startswith("+@") or r in ("allcommands", "allkeys")]


def test_operations_doc_lists_every_command() -> None:
    doc = (ROOT / "docs/operations.md").read_text()
    assert " ".join(worker_acl_rules("segstream")) in doc
    for command, _ in WORKER_COMMANDS:
        assert f"| `{command.upper().replace('|', ' ')}` |" in doc, command


def test_every_command_the_state_store_builds_itself_is_allowed() -> None:
    """The commands ``RedisState`` sends besides its scripts, taken from the code that builds
    them: the WAIT marker and WAIT (``MIN_REPLICAS`` > 0), the outbox clear."""
    from segstream.stream.state.store import RedisState

    state = RedisState(None, "app:", min_replicas=1)  # type: ignore[arg-type]  # never sent
    built = [*state._wait_commands("app:{u:1}", 1), *state._clear_commands({1: [b"change"]})]
    allowed = {command for command, _ in WORKER_COMMANDS}
    assert {str(command[0]).lower() for command in built} <= allowed
