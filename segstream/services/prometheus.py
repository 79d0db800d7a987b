"""The machine's Prometheus (Debian package ``prometheus``), scraping the local workers.

It runs on loopback from ``<data_dir>/prometheus/`` with its own TSDB there, evaluates
segstream's rule file (:mod:`segstream.services.alert_rules`) and scrapes every worker's
``/metrics`` in the job ``segstream`` that the rules expect. The workers to scrape are listed
in ``<data_dir>/prometheus/targets.json`` (Prometheus's file service discovery, re-read every
few seconds): it starts with the worker's default address, ``127.0.0.1:$SEGSTREAM_HTTP_PORT``,
and an operator adds the others (a second worker on ``SEGSTREAM_HTTP_PORT=6067``) by editing
it, without a restart.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import yaml

from segstream.errors import ServiceError
from segstream.services.alert_rules import rules_file
from segstream.services.process import LocalServer
from segstream.settings import Settings, StackSettings

__all__ = ["SCRAPE_JOB", "PrometheusServer"]

SCRAPE_JOB = "segstream"
"""The scrape job of the workers: the worker-down alert reads ``up{job="segstream"}``."""


class PrometheusServer(LocalServer):
    """The local Prometheus for ``settings``: start, wait for ``/-/ready``, stop.

    ``rules``: the rule file to load (default: segstream's own); ``targets``: the workers'
    ``host:port`` to scrape, written to the targets file (default: keep the file as an
    operator left it, or start it with ``127.0.0.1:<http_port>``); ``interval_s``: the scrape
    and evaluation interval in seconds.
    """

    name = "prometheus"
    config_name = "prometheus.yml"
    log_name = "prometheus.log"
    port_settings = "another port with SEGSTREAM_PROMETHEUS_PORT"
    start_timeout_s = 60.0
    stop_timeout_s = 20.0

    def __init__(
        self,
        settings: Settings,
        stack: StackSettings,
        *,
        rules: Path | None = None,
        targets: Sequence[str] | None = None,
        interval_s: float = 15.0,
    ) -> None:
        super().__init__(settings, stack)
        self.rules = rules
        self.targets = list(targets) if targets is not None else None
        self.interval_s = interval_s
        self.targets_file = self.home / "targets.json"
        self.token_file = self.home / "http-token"

    def ports(self) -> tuple[int, ...]:
        """The web and API port."""
        return (self.stack.prometheus_port,)

    @property
    def url(self) -> str:
        """Base URL of its web UI and HTTP API."""
        return f"http://127.0.0.1:{self.stack.prometheus_port}"

    def config(self) -> dict[str, object]:
        """The configuration file's document (``prometheus.yml``)."""
        interval = f"{max(1, round(self.interval_s * 1000))}ms"
        job: dict[str, object] = {
            "job_name": SCRAPE_JOB,
            "metrics_path": "/metrics",
            "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "5s"}],
        }
        if self.settings.http_token is not None:
            # The workers want the bearer token on /metrics; Prometheus reads it from a file
            # so that it never shows in the config or on the command line.
            job["authorization"] = {"type": "Bearer", "credentials_file": str(self.token_file)}
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(self.rules or rules_file())],
            "scrape_configs": [job],
        }

    def write_files(self) -> None:
        """Write the config, the targets file (unless an operator's is kept) and the token
        file under ``home``: what ``start`` does before it launches Prometheus."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.targets is not None or not self.targets_file.exists():
            targets = self.targets or [f"127.0.0.1:{self.settings.http_port}"]
            self.targets_file.write_text(json.dumps([{"targets": targets}], indent=2) + "\n")
        if self.settings.http_token is not None:
            self.token_file.touch(mode=0o600)
            os.chmod(self.token_file, 0o600)
            self.token_file.write_text(self.settings.http_token.get_secret_value())
        self.config_file.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def _launch(self) -> None:
        """Find prometheus, write its config and targets, start it.

        Raises:
            ServiceError: prometheus is missing, or the rule file is (see ``rules_file``).
        """
        binary = shutil.which("prometheus")
        if binary is None:
            raise ServiceError("prometheus not found: apt-get install prometheus")
        self.write_files()
        self.process.start(
            [
                binary,
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.home / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.stack.prometheus_port}",
                "--storage.tsdb.retention.time=7d",
            ]
        )

    def wait_ready(self, timeout_s: float) -> None:
        """Block until ``/-/ready`` answers 200 (the TSDB is open and rules are loaded)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if not self.process.is_running():
                raise ServiceError(f"prometheus exited; its log ends:\n{self.process.log_tail()}")
            if time.monotonic() > deadline:
                raise ServiceError(f"Prometheus at {self.url} was not ready in {timeout_s} s")
            time.sleep(0.1)
