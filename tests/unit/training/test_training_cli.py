"""The offline verbs end to end through ``segstream.cli.main``: generate, train, assign, predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segstream.cli import main
from segstream.training.artifact import load_model
from segstream.training.assign import assign
from segstream.training.data import DataSource, read_features
from segstream.training.pipeline import ASSIGNMENTS_FILE, REPORT_FILE


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """3,000 generated users trained with --k auto: (data dir, models dir)."""
    root = tmp_path_factory.mktemp("cli")
    data, models = root / "data", root / "models"
    assert main(["generate", "--out", str(data), "--users", "3000", "--seed", "5"]) == 0
    assert main(["train", "--data", str(data), "--out", str(models), "--seed", "1"]) == 0
    return data, models


def test_train_publishes_a_loadable_version_with_report_and_assignments(
    trained: tuple[Path, Path],
) -> None:
    _, models = trained
    current = models / "current"
    assert current.is_symlink()
    version_dir = current.resolve()
    assert (version_dir / REPORT_FILE).stat().st_size > 10_000
    model = load_model(current)
    assert model.version == version_dir.name and 2 <= model.k <= 10
    stored = pd.read_parquet(version_dir / ASSIGNMENTS_FILE)
    assert len(stored) == model.n_rows


def test_train_prints_the_summary_table(
    tmp_path: Path, trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = trained
    assert main(["train", "--data", str(data), "--out", str(tmp_path), "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert "k: fixed k=3" in out and "users" in out and "report" in out
    assert load_model(tmp_path / "current").k == 3


def test_assign_writes_the_batch_reference_for_every_user(
    tmp_path: Path, trained: tuple[Path, Path]
) -> None:
    data, models = trained
    out = tmp_path / "a.parquet"
    assert (
        main(["assign", "--model", str(models / "current"), "--data", str(data), "--out", str(out)])
        == 0
    )
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["user_id", "segment", "component_1", "component_2", "unseen"]
    features = read_features(DataSource(path=data))
    assert frame["user_id"].tolist() == features["user_id"].tolist()
    stored = pd.read_parquet(models / "current" / ASSIGNMENTS_FILE)
    assert (frame["segment"].to_numpy() == stored["segment"].to_numpy()).all()
    np.testing.assert_array_equal(frame["component_1"], stored["component_1"])


def _predict_argv(
    models: Path, *extra: str, country: str = "Brasil", brand: str = "Kalomi"
) -> list[str]:
    """``segstream predict`` for a 34-year-old woman from ``country`` buying ``brand`` jeans."""
    return [
        "predict",
        "--model",
        str(models / "current"),
        "--age",
        "34",
        "--gender",
        "F",
        "--country",
        country,
        "--traffic-source",
        "Search",
        "--total-orders",
        "3",
        "--brand",
        brand,
        "--category",
        "Jeans",
        *extra,
    ]


def _predict(
    models: Path, capsys: pytest.CaptureFixture[str], *extra: str, country: str = "Brasil"
) -> dict:
    assert main(_predict_argv(models, "--json", *extra, country=country)) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_gives_segment_distances_and_five_similar_users(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, models = trained
    model = load_model(models / "current")
    result = _predict(models, capsys)
    assert len(result["distances"]) == model.k
    assert result["segment"] == int(np.argmin(result["distances"]))
    similar = result["similar_users"]
    assert len(similar) == 5
    sims = [s["similarity"] for s in similar]
    assert sims == sorted(sims, reverse=True)
    # Cosine similarity recomputed from the stored components agrees, and nobody is closer.
    stored = pd.read_parquet(models / "current" / ASSIGNMENTS_FILE)
    vectors = stored[["component_1", "component_2"]].to_numpy()
    query = np.array(result["components"])
    cosine = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    assert np.isclose(max(cosine), sims[0])
    assert np.isclose(cosine[stored["user_id"] == similar[0]["user_id"]][0], sims[0])
    assert "most_frequent_brand" in result["unseen_columns"]  # Kalomi is not a generated brand


def test_predict_flags_an_unseen_country_and_names_its_fallback(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, models = trained
    result = _predict(models, capsys, country="Atlantis")
    assert "country" in result["unseen_columns"]
    assert result["fallbacks"]["country"] == "China"


def test_predict_with_data_recomputes_the_reference_users(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, models = trained
    stored = _predict(models, capsys)
    fresh = _predict(models, capsys, "--data", str(data))
    assert fresh["similar_users"] == stored["similar_users"]


def test_predict_prints_a_readable_answer(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, models = trained
    argv = _predict_argv(models, country="Atlantis", brand="x")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "segment" in out and "unseen in training" in out and "similar users" in out


def test_predict_prints_values_that_look_like_markup_verbatim(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, models = trained
    argv = _predict_argv(models, "--top", "0", country="[bold]Atlantis[/bold]", brand="x")
    assert main(argv) == 0
    assert "[bold]Atlantis[/bold]" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data", "{tmp}/absent", "--out", "{tmp}/m"], "does not exist"),
        (
            ["assign", "--model", "{tmp}/none", "--data", "{tmp}", "--out", "{tmp}/a.parquet"],
            "no model",
        ),
        (["train", "--db", "nosuchdialect://x", "--out", "{tmp}/m"], "bad database URL"),
    ],
)
def test_user_errors_exit_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("k", ["1", "11", "five"])
def test_k_outside_two_to_ten_is_a_usage_error(tmp_path: Path, k: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(tmp_path), "--out", str(tmp_path), "--k", k])
    assert exit_info.value.code == 2


def test_model_and_assign_agree_with_library_call(trained: tuple[Path, Path]) -> None:
    data, models = trained
    model = load_model(models)
    features = read_features(DataSource(path=data))
    stored = pd.read_parquet(models / "current" / ASSIGNMENTS_FILE)
    assert (assign(model, features).segments == stored["segment"].to_numpy()).all()
