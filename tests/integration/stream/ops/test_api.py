"""The HTTP API on the real stack, against what the batch pipeline says about the same users."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from segstream.cli.main import main
from segstream.settings import load_settings
from segstream.stream.http.metrics import Metrics
from segstream.stream.kafka.topics import read_all
from segstream.training.assign import assign
from segstream.training.features import FEATURE_COLUMNS
from tests.integration.stream.ops.conftest import World
from tests.integration.stream.ops.support import ServedApp, named, scrape
from tests.ports import free_port
from tests.waiting import wait_until


def batch_rows(world: World, users: list[int]) -> dict[int, dict[str, object]]:
    frame = world.dataset.features.set_index("user_id").loc[users]
    return {int(u): {c: row[c] for c in FEATURE_COLUMNS} for u, row in frame.iterrows()}


def test_user_lookup_gives_the_batch_features_segment_and_distances(
    world: World, served: ServedApp
) -> None:
    users = world.assignable[:25]
    rows = batch_rows(world, users)
    model = world.dataset.model
    expected = assign(model, {c: [rows[u][c] for u in users] for c in FEATURE_COLUMNS})
    current = {}
    for record in asyncio.run(read_all(world.settings, world.settings.topic_user_segments)):
        current[int(record.key)] = json.loads(record.value)
    for i, user_id in enumerate(users):
        status, body = served.json("GET", f"/users/{user_id}")
        assert status == 200, body
        assert body["features"] == {c: _plain(rows[user_id][c]) for c in FEATURE_COLUMNS}
        assert body["segment"] == int(expected.segments[i])
        assert body["model_version"] == model.version == body["distances_model_version"]
        assert body["distances"] == pytest.approx(expected.distances[i].tolist(), abs=1e-12)
        assert body["assignable"] is True and body["pending_changes"] == 0
        # updated_at is what downstream consumers of user-segments were told.
        assert body["updated_at"] == current[user_id]["updated_at"]


def _plain(value: object) -> object:
    return value.item() if hasattr(value, "item") else value


def test_a_user_without_orders_is_known_but_has_no_segment(world: World, served: ServedApp) -> None:
    status, body = served.json("GET", f"/users/{world.profile_only[0]}")
    assert status == 200
    assert body["segment"] is None and body["distances"] is None and body["updated_at"] is None
    assert body["assignable"] is False
    assert body["features"]["total_orders"] == 0 and body["features"]["age"] is not None


def test_unknown_user_is_404_saying_so(served: ServedApp) -> None:
    status, body = served.json("GET", "/users/9007199254740991")
    assert status == 404
    assert "never seen" in body["error"]


@pytest.mark.parametrize("raw", ["abc", "0", "-4", "1.5", "99999999999999999999"])
def test_malformed_user_id_is_400_naming_the_range(served: ServedApp, raw: str) -> None:
    status, body = served.json("GET", f"/users/{raw}")
    assert status == 400
    assert "user_id must be an integer" in body["error"]


def test_predict_answers_exactly_as_segstream_predict(
    world: World,
    served: ServedApp,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    row = {
        "age": 37,
        "gender": "F",
        "country": "Brasil",
        "traffic_source": "Search",
        "total_orders": 3,
        "most_frequent_brand": "a brand training never saw",
        "most_frequent_category": "Jeans",
    }
    status, body = served.json("POST", "/predict", row)
    assert status == 200, body
    monkeypatch.setenv("SEGSTREAM_MODEL_DIR", str(world.settings.model_dir))
    argv = [
        "predict",
        "--model",
        str(world.settings.model_dir),
        "--json",
        "--age",
        "37",
        "--gender",
        "F",
        "--country",
        "Brasil",
        "--traffic-source",
        "Search",
        "--total-orders",
        "3",
        "--brand",
        row["most_frequent_brand"],
        "--category",
        "Jeans",
    ]
    assert main(argv) == 0
    cli = json.loads(capsys.readouterr().out)
    # The same document, field names included: the CLI speaks the API's language.
    assert cli == body
    assert cli["unseen_columns"] == ["most_frequent_brand"]
    assert len(cli["similar_users"]) == 5


def test_predict_top_limits_the_similar_users(served: ServedApp, world: World) -> None:
    row = batch_rows(world, world.assignable[:1])[world.assignable[0]]
    status, body = served.json(
        "POST", "/predict", {**{k: _plain(v) for k, v in row.items()}, "top": 0}
    )
    assert status == 200 and body["similar_users"] == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"not json", "body is not JSON"),
        ({"age": 30}, "missing field(s)"),
        (
            {
                "age": "x",
                "gender": "F",
                "country": "C",
                "traffic_source": "S",
                "total_orders": 1,
                "most_frequent_brand": "B",
                "most_frequent_category": "K",
            },
            'age must be a whole number from 0 to 120, got "x"',
        ),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_predict_body_is_400_saying_what_is_wrong(
    served: ServedApp, body: object, expected: str
) -> None:
    status, answer = served.json("POST", "/predict", body)
    assert status == 400
    assert expected in answer["error"]


def test_oversized_body_is_413(served: ServedApp) -> None:
    status, answer = served.json("POST", "/predict", b"{" + b" " * (1024 * 1024 + 10) + b"}")
    assert status == 413
    assert answer["error"]


def test_wrong_method_is_405_with_allow(served: ServedApp) -> None:
    status, headers, payload = served.request("DELETE", "/segments")
    assert status == 405
    assert "GET" in headers["Allow"]
    assert json.loads(payload)["error"]


def test_segments_count_every_stored_user_as_the_batch_assigns_them(
    world: World, served: ServedApp
) -> None:
    rows = batch_rows(world, world.assignable)
    model = world.dataset.model
    segments = assign(
        model, {c: [rows[u][c] for u in world.assignable] for c in FEATURE_COLUMNS}
    ).segments
    status, body = served.json("GET", "/segments")
    assert status == 200
    assert body["model_version"] == model.version and body["k"] == model.k
    expected = [int((segments == s).sum()) for s in range(model.k)]
    assert [s["users"] for s in body["segments"]] == expected
    assert body["unassigned"] == len(world.profile_only)
    assert body["other_versions"] == 0


def test_health_and_readiness_with_everything_up(served: ServedApp) -> None:
    assert served.json("GET", "/healthz") == (200, {"status": "alive"})
    status, body = _ready(served)
    assert status == 200, body
    assert body["ready"] is True and body["reasons"] == []
    assert set(body["checks"]) == {"kafka", "redis", "model"}


def _ready(served: ServedApp, want: int = 200, timeout_s: float = 10.0) -> tuple[int, dict]:
    """/readyz once it answers ``want``, else its last answer (the caller asserts on it)."""
    # The Kafka check needs the first connection, made by the background poller.
    last: list[tuple[int, dict]] = []

    def answered() -> bool:
        last.append(served.json("GET", "/readyz"))
        return last[-1][0] == want

    with contextlib.suppress(AssertionError):
        wait_until(answered, timeout_s, "", interval_s=0.2)
    return last[-1]


def test_readiness_names_every_missing_dependency(world: World, tmp_path: Path) -> None:
    dead = free_port()
    settings = load_settings(
        **{
            **world.settings.model_dump(),
            "kafka_bootstrap_servers": f"127.0.0.1:{dead}",
            "redis_url": f"redis://127.0.0.1:{dead}/0",
            "model_dir": tmp_path / "no-models",
            "http_port": free_port(),
        }
    )
    app = ServedApp(settings, lag_interval_s=0.3)
    try:
        assert app.json("GET", "/healthz") == (200, {"status": "alive"})
        status, body = app.json("GET", "/readyz")
        assert status == 503
        assert body["ready"] is False
        assert [r.split(":")[0] for r in body["reasons"]] == ["kafka", "redis", "model"]
        assert "no model" in body["checks"]["model"]["detail"]
        status, answer = app.json("GET", "/segments")
        assert status == 503 and "no model" in answer["error"]
        status, answer = app.json("GET", "/users/1")
        assert status == 503 and "Redis is unavailable" in answer["error"]
    finally:
        app.stop()


PREDICT_ROW = {
    "age": 37,
    "gender": "F",
    "country": "Brasil",
    "traffic_source": "Search",
    "total_orders": 3,
    "most_frequent_brand": "Levi's",
    "most_frequent_category": "Jeans",
}


def _unknown_counted(served: ServedApp) -> float:
    samples = named(scrape(served), "segstream_unknown_fields_total")
    return samples.get((("topic", "predict"),), 0.0)


def test_predict_ignores_and_counts_unknown_fields_and_takes_37_0_as_37(
    served: ServedApp,
) -> None:
    status, plain = served.json("POST", "/predict", PREDICT_ROW)
    assert status == 200, plain
    before = _unknown_counted(served)
    status, body = served.json("POST", "/predict", {**PREDICT_ROW, "age": 37.0, "email": "a@b"})
    assert status == 200, body
    assert body == plain
    assert _unknown_counted(served) == before + 1


def test_predict_refuses_unknown_fields_when_set_to_dead_letter(world: World) -> None:
    settings = world.settings.model_copy(
        update={"unknown_fields": "dead_letter", "http_port": free_port()}
    )
    app = ServedApp(settings, metrics=Metrics())
    try:
        status, answer = app.json("POST", "/predict", {**PREDICT_ROW, "email": "a@b"})
        assert status == 400
        assert answer["error"].startswith("field 'email' is not part of a predict request")
        assert app.json("POST", "/predict", PREDICT_ROW)[0] == 200
    finally:
        app.stop()
