"""The worker as a Redis ACL user confined to its app's keys and segstream's commands
(``segstream.stream.state.acl``): parity holds, its HTTP side answers, the command-line tools
(``segment``, ``populations``, ``reassign``) work as that user, and Redis refused it nothing
along the way."""

from __future__ import annotations

import json
import signal
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from segstream.settings import Settings
from segstream.stream.clients.redis import sync_redis_client
from segstream.stream.state.acl import worker_acl_rules
from tests.integration.stream.conftest import Dataset, cli_json, replay, wait_until_consumed
from tests.integration.stream.parity import check_parity

pytestmark = pytest.mark.slow


def _get(port: int, path: str) -> tuple[int, dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return response.status, json.loads(response.read())


def test_the_worker_needs_no_more_than_the_documented_acl(
    stream_settings: Settings,
    dataset: Dataset,
    start_worker,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    user, password = f"acl-{stream_settings.app_id}", uuid.uuid4().hex
    rules = worker_acl_rules(stream_settings.app_id)
    redis_client.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", *rules)
    redis_client.execute_command("ACL", "LOG", "RESET")
    confined = stream_settings.model_copy(
        update={"redis_username": user, "redis_password": SecretStr(password)}
    )
    try:
        replay(confined, dataset.plan)
        worker = start_worker(confined)
        wait_until_consumed(confined, [worker])
        # The HTTP side reads as the same user: a lookup, and populations (SCAN + a script).
        some_user = int(dataset.features["user_id"].iloc[0])
        status, looked_up = _get(worker.http_port, f"/users/{some_user}")
        assert status == 200 and looked_up["segment"] is not None
        status, segments = _get(worker.http_port, "/segments")
        assert status == 200
        assert sum(s["users"] for s in segments["segments"]) == len(dataset.features)
        assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
        check_parity(confined, dataset, tmp_path)  # read back as the confined user too
        # The command-line tools that read and write the state, as the same user.
        assert cli_json(confined, "segment", str(some_user))["segment"] is not None
        assert cli_json(confined, "populations")
        assert cli_json(confined, "populations", "--recount")
        assert cli_json(confined, "reassign", timeout_s=120)

        refused = [
            entry
            for entry in redis_client.execute_command("ACL", "LOG")
            if dict(zip(entry[::2], entry[1::2], strict=True)).get(b"username") == user.encode()
        ]
        assert refused == [], refused
        # And it is confined: other keys and other commands are refused.
        client = sync_redis_client(confined)
        try:
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.hgetall("another-app:{u:1}")
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.flushall()
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.config_get("requirepass")
        finally:
            client.close()
    finally:
        redis_client.execute_command("ACL", "DELUSER", user)
