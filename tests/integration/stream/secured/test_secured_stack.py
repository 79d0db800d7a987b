"""The product on the secured stack: SASL_SSL Kafka (SCRAM-SHA-512), TLS-only Redis with the
worker-ACL user, an HTTP token. Parity holds; wrong credentials, an untrusted CA or a
plaintext client fail within seconds naming the cause; no secret shows anywhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from segstream.services.stack import Stack
from segstream.services.tls import issue_certificates
from segstream.settings import Settings, StackSettings, as_environment
from tests.integration.stream.conftest import (
    REPO,
    Dataset,
    app_settings,
    replay,
    wait_until_consumed,
)
from tests.integration.stream.parity import check_parity
from tests.integration.stream.secured.conftest import APP_ID, security_overrides

pytestmark = pytest.mark.slow


def _secure_app(
    client: Settings,
    dataset: Dataset,
    tmp_path: Path,
    *,
    create_topics: bool = True,
    **overrides: object,
) -> Settings:
    """A fresh app's settings (own topics; the ACL user's app id) on the secured stack."""
    return app_settings(
        client.kafka_bootstrap_servers,
        client.redis_url,
        create_topics=create_topics,
        **{
            **security_overrides(client),
            "model_dir": dataset.models_dir,
            "data_dir": tmp_path / "worker-data",
            "app_id": APP_ID,
            "log_level": "info",
            **overrides,
        },
    )


def _cli(
    settings: Settings, *args: str, stack: StackSettings | None = None, check: bool = True
) -> str:
    """``segstream *args`` run with ``settings`` (and, for ``services``, the stack's ports)."""
    done = subprocess.run(
        [sys.executable, "-m", "segstream.cli", *args],
        env=as_environment(settings, os.environ, stack),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert not check or done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def _get(port: int, path: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read().decode()


def test_parity_on_the_secured_stack_and_no_secret_in_any_output(
    secure_stack: Stack, secure_client: Settings, dataset: Dataset, start_worker, tmp_path: Path
) -> None:
    token = f"http-token-{uuid.uuid4().hex}"
    settings = _secure_app(secure_client, dataset, tmp_path, http_token=SecretStr(token))
    replay(settings, dataset.plan)
    worker = start_worker(settings)
    wait_until_consumed(settings, [worker])
    outputs: dict[str, str] = {}
    for path in ("/readyz", "/metrics", "/status.json", "/segments", "/openapi.json"):
        status, body = _get(worker.http_port, path, token)
        assert status == 200, (path, body)
        outputs[path] = body
    assert '"ready": true' in outputs["/readyz"]
    assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
    check_parity(settings, dataset, tmp_path)

    # Every CLI verb an operator would run against it, and the stack's own logs.
    client, ports = secure_stack.client, secure_stack.stack
    outputs["services up --secure"] = _cli(client, "services", "up", "--secure", stack=ports)
    outputs["services status"] = _cli(client, "services", "status", stack=ports)
    outputs["services check"] = _cli(client, "services", "check", stack=ports)
    outputs["config"] = _cli(settings, "config")
    outputs["lag"] = _cli(settings, "lag")
    outputs["worker log"] = worker.log_path.read_text(errors="replace")
    for log in (*secure_stack.kafka.home.glob("*.log"), *secure_stack.redis.home.glob("*.log")):
        outputs[str(log)] = log.read_text(errors="replace")
    assert "SASL_SSL" in outputs["services status"]
    assert "rediss://segstream:***@" in outputs["config"]
    assert 'SEGSTREAM_REDIS_PASSWORD="$(cat ' in outputs["services up --secure"]

    assert settings.kafka_sasl_password is not None and settings.redis_password is not None
    secrets = {
        "kafka password": settings.kafka_sasl_password.get_secret_value(),
        "redis password": settings.redis_password.get_secret_value(),
        "http token": token,
    }
    leaks = [
        (what, where)
        for what, secret in secrets.items()
        for where, text in outputs.items()
        if secret in text
    ]
    assert leaks == []
    # And the servers' command lines (visible to every local user in ps) hold none either.
    for pid in (secure_stack.kafka.process.pid(), secure_stack.redis.process.pid()):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert not [s for s in secrets.values() if s in cmdline]


CASES = {
    "wrong Kafka password": (
        {"kafka_sasl_password": SecretStr("not-the-password")},
        "refused the SASL credentials",
    ),
    "wrong Redis password": (
        {"redis_password": SecretStr("not-the-password")},
        "refused the credentials of user 'segstream'",
    ),
    "untrusted CA (Kafka)": ({"kafka_ssl_cafile": "OTHER_CA"}, "SEGSTREAM_KAFKA_SSL_CAFILE"),
    "untrusted CA (Redis)": ({"redis_ssl_cafile": "OTHER_CA"}, "SEGSTREAM_REDIS_SSL_CAFILE"),
    "plaintext Kafka client": (
        {
            "kafka_security_protocol": "PLAINTEXT",
            "kafka_sasl_username": None,
            "kafka_sasl_password": None,
            "kafka_ssl_cafile": None,
        },
        "closed the connection at once",
    ),
    "plaintext Redis client": (
        {"redis_url": "PLAIN_URL", "redis_ssl_cafile": None},
        "use a rediss:// SEGSTREAM_REDIS_URL",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_misconfigured_worker_fails_fast_naming_the_cause(
    case: str,
    secure_client: Settings,
    dataset: Dataset,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    changes, expected = CASES[case]
    other_ca = issue_certificates(tmp_path_factory.mktemp("other-ca")).ca
    plain_url = secure_client.redis_url.replace("rediss://", "redis://")
    replace = {"OTHER_CA": other_ca, "PLAIN_URL": plain_url}
    overrides = {k: replace.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    settings = _secure_app(secure_client, dataset, tmp_path, create_topics=False)
    settings = settings.model_copy(update=overrides)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "segstream.cli", "worker"],
        env=as_environment(settings, os.environ),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert expected in last, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert took < 30, f"{case}: took {took:.1f} s"
