"""The replication role's grants: the local stack's and docker-compose's are the same."""

from __future__ import annotations

from pathlib import Path

from segstream.services.postgres import CDC_ROLE, grant_statements

ROOT = Path(__file__).resolve().parents[3]


def test_compose_init_script_grants_what_the_local_stack_grants() -> None:
    script = (ROOT / "docker" / "postgres-cdc-init.sh").read_text()
    server, shop = grant_statements("public")
    for statement in [*server, *shop]:
        assert f"{statement};" in script, statement
    assert f'CREATE ROLE "{CDC_ROLE}" WITH LOGIN REPLICATION NOSUPERUSER' in script


def test_the_role_is_never_a_superuser_and_reads_only() -> None:
    server, shop = grant_statements("public")
    text = " ".join([*server, *shop])
    assert "SUPERUSER" not in text
    assert "INSERT" not in text and "UPDATE" not in text and "DELETE" not in text


def test_a_schema_name_is_quoted() -> None:
    _, shop = grant_statements('odd"name')
    assert 'SCHEMA "odd""name"' in shop[1]
