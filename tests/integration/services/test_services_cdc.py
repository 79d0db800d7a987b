"""`segstream services up --cdc`, then the CDC verbs, as an operator types them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from segstream.net import port_is_open
from tests.ports import free_port


def _segstream(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segstream.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    # Enterable by others: run as root, PostgreSQL runs as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="segstream-cdc-cli-"))
    os.chmod(root, 0o755)
    ports = {name: free_port() for name in ("kafka", "controller", "redis", "postgres", "connect")}
    yield {
        **os.environ,
        "SEGSTREAM_DATA_DIR": str(root / "data"),
        "SEGSTREAM_KAFKA_PORT": str(ports["kafka"]),
        "SEGSTREAM_KAFKA_CONTROLLER_PORT": str(ports["controller"]),
        "SEGSTREAM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ports['kafka']}",
        "SEGSTREAM_REDIS_PORT": str(ports["redis"]),
        "SEGSTREAM_REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "SEGSTREAM_POSTGRES_PORT": str(ports["postgres"]),
        "SEGSTREAM_CONNECT_PORT": str(ports["connect"]),
        "SEGSTREAM_CONNECT_URL": f"http://127.0.0.1:{ports['connect']}",
        "SEGSTREAM_CDC_DATABASE_URL": f"postgresql://segstream_cdc@127.0.0.1:{ports['postgres']}/shop",
    }
    shutil.rmtree(root, ignore_errors=True)


def test_up_cdc_generate_register_check_shop_down(env: dict[str, str]) -> None:
    try:
        up = _segstream(env, "services", "up", "--cdc")
        assert up.returncode == 0, up.stderr
        for name in ("kafka", "redis", "postgres", "connect"):
            assert any(
                line.startswith(name) and "started" in line for line in up.stdout.splitlines()
            )
        status = _segstream(env, "services", "status")
        assert status.returncode == 0, status.stdout
        assert "Debezium 3.6.1.Final" in status.stdout
        assert "wal_level=logical" in status.stdout

        secret = (Path(env["SEGSTREAM_DATA_DIR"]) / "secrets" / "postgres-password").read_text()
        port = env["SEGSTREAM_POSTGRES_PORT"]
        shop_db = f"postgresql://segstream:{secret.strip()}@127.0.0.1:{port}/shop"
        generated = _segstream(
            env, "generate", "--db", shop_db, "--users", "20", "--catalogue-size", "10"
        )
        assert generated.returncode == 0, generated.stderr
        assert "publication segstream" in generated.stdout
        again = _segstream(env, "generate", "--db", shop_db, "--users", "20")
        assert again.returncode == 2 and "--replace" in again.stderr

        registered = _segstream(env, "cdc", "connector", "--register", "--wait", "180")
        assert registered.returncode == 0, registered.stderr
        assert "tasks RUNNING" in registered.stdout
        shop = _segstream(env, "shop", "--db", shop_db, "--rate", "100", "--steps", "10")
        assert shop.returncode == 0, shop.stderr
        assert "10 change(s)" in shop.stdout

        check = _segstream(env, "services", "check")
        assert check.returncode == 0, check.stderr
        assert "postgres" in check.stdout and "connect" in check.stdout
        fit = _segstream(env, "cdc", "check")
        assert fit.returncode == 0, fit.stdout + fit.stderr
    finally:
        down = _segstream(env, "services", "down")
    assert down.returncode == 0, down.stderr
    assert "connect  stopped" in down.stdout and "postgres stopped" in down.stdout
    for name in ("SEGSTREAM_POSTGRES_PORT", "SEGSTREAM_CONNECT_PORT", "SEGSTREAM_KAFKA_PORT"):
        assert not port_is_open(int(env[name])), name
