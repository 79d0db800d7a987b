"""The local Prometheus's files: a config promtool accepts, targets an operator may edit, the
workers' token kept out of the config."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from segstream.services.alert_rules import RULES_FILE
from segstream.services.prometheus import SCRAPE_JOB, PrometheusServer
from segstream.settings import load_settings, load_stack_settings


def _server(tmp_path: Path, **kwargs: object) -> PrometheusServer:
    settings = load_settings(data_dir=tmp_path, http_port=6071, **kwargs)
    return PrometheusServer(settings, load_stack_settings(), interval_s=2.0)


def test_the_config_loads_the_rules_and_scrapes_the_workers_in_the_rules_job(
    tmp_path: Path,
) -> None:
    server = _server(tmp_path)
    server.write_files()
    config = yaml.safe_load(server.config_file.read_text())
    assert config["rule_files"] == [str(RULES_FILE)]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == SCRAPE_JOB == "segstream"
    assert config["global"] == {"scrape_interval": "2000ms", "evaluation_interval": "2000ms"}
    assert json.loads(server.targets_file.read_text()) == [{"targets": ["127.0.0.1:6071"]}]
    assert "authorization" not in job
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make setup` installs Debian's prometheus package"
    done = subprocess.run(
        [promtool, "check", "config", str(server.config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_targets_an_operator_edited_are_kept(tmp_path: Path) -> None:
    server = _server(tmp_path)
    server.write_files()
    edited = [{"targets": ["127.0.0.1:6066", "127.0.0.1:6067"]}]
    server.targets_file.write_text(json.dumps(edited))
    server.write_files()
    assert json.loads(server.targets_file.read_text()) == edited


def test_the_http_token_goes_to_an_owner_only_file_never_into_the_config(
    tmp_path: Path,
) -> None:
    server = _server(tmp_path, http_token="s3cret-token-value")
    server.write_files()
    assert "s3cret-token-value" not in server.config_file.read_text()
    (job,) = yaml.safe_load(server.config_file.read_text())["scrape_configs"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": str(server.token_file)}
    assert server.token_file.read_text() == "s3cret-token-value"
    assert stat.S_IMODE(server.token_file.stat().st_mode) == 0o600


def test_a_missing_prometheus_binary_is_named_with_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segstream.errors import ServiceError

    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus on it
    with pytest.raises(ServiceError, match="apt-get install prometheus"):
        _server(tmp_path).start()
