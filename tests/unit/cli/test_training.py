"""The offline verbs end to end through ``segstream.cli.main``: generate, train, assign, predict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment

from segstream.cli.main import main
from segstream.training.artifact import load_model, publish_current
from segstream.training.assign import assign
from segstream.training.data import DataSource, read_features
from segstream.training.pipeline import REPORT_FILE
from segstream.training.prediction import ASSIGNMENTS_FILE


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
    # The five nearest stored users in component space, recomputed here, nearest first.
    stored = pd.read_parquet(models / "current" / ASSIGNMENTS_FILE)
    vectors = stored[["component_1", "component_2"]].to_numpy()
    distance = np.linalg.norm(vectors - np.array(result["components"]), axis=1)
    nearest = np.argsort(distance, kind="stable")[:5]
    assert [s["user_id"] for s in similar] == stored["user_id"].to_numpy()[nearest].tolist()
    assert [s["distance"] for s in similar] == pytest.approx(distance[nearest], abs=1e-12)
    assert [s["segment"] for s in similar] == stored["segment"].to_numpy()[nearest].tolist()
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
        (
            ["train", "--db", "nosuchdialect://x", "--out", "{tmp}/m"],
            "nosuchdialect databases are not supported",
        ),
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


@pytest.fixture(scope="module")
def retrained(trained: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained data, trained twice into one MODELS dir with other seeds (k=4): MODELS."""
    data, _ = trained
    models = tmp_path_factory.mktemp("retrain") / "models"
    for seed in ("1", "3"):
        argv = ["train", "--data", str(data), "--out", str(models), "--k", "4", "--seed", seed]
        assert main(argv) == 0
    return models


def _version_dirs(models: Path) -> list[Path]:
    return sorted(p for p in models.iterdir() if p.is_dir() and not p.is_symlink())


def test_training_again_numbers_the_segments_after_the_current_version(
    retrained: Path,
) -> None:
    first_dir, second_dir = _version_dirs(retrained)
    first, second = load_model(first_dir), load_model(retrained / "current")
    assert second.version == second_dir.name
    assert first.lineage is not None and first.lineage.previous_version is None
    lineage = second.lineage
    assert lineage is not None and lineage.aligned
    assert lineage.previous_version == first.version
    assert [m.previous for m in lineage.matches] == [0, 1, 2, 3]
    # The stored training users keep their segment ids: as many as any numbering could keep
    # (the two seeds' partitions differ a little), as many as the transitions say.
    before = pd.read_parquet(first_dir / ASSIGNMENTS_FILE)
    after = pd.read_parquet(second_dir / ASSIGNMENTS_FILE)
    assert (before["user_id"] == after["user_id"]).all()
    same = int((before["segment"] == after["segment"]).sum())
    table = pd.crosstab(before["segment"], after["segment"]).to_numpy()
    rows, cols = linear_sum_assignment(-table)
    assert same == table[rows, cols].sum()
    assert lineage.transitions is not None and lineage.transitions.kept == same
    report = (second_dir / REPORT_FILE).read_text()
    assert "Lineage" in report and "kept their segment id" in report


def test_train_prints_the_mapping_and_the_users_moved(
    retrained: Path, trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = trained
    argv = ["train", "--data", str(data), "--out", str(retrained), "--k", "5", "--seed", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "segment ids follow" in out and "none (new id)" in out
    assert "kept their segment id" in out
    assert load_model(retrained).lineage.matches[4].previous is None  # type: ignore[union-attr]


def test_no_align_keeps_kmeans_numbering_and_says_so(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, models = trained
    current = load_model(models)
    shutil.copytree(models / "current", tmp_path / current.version)
    publish_current(tmp_path, tmp_path / current.version)
    argv = ["train", "--data", str(data), "--out", str(tmp_path), "--k", "4", "--no-align"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lineage = load_model(tmp_path).lineage
    assert lineage is not None and not lineage.aligned and lineage.matches == ()
    assert lineage.previous_version == current.version
    assert "alignment switched off" in out and "kept their segment id" in out


def test_an_incompatible_previous_version_is_named_and_training_goes_on(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, models = trained
    old = tmp_path / "old"
    shutil.copytree(models / "current", old)
    document = json.loads((old / "model.json").read_text())
    document["schema_version"] = 0
    (old / "model.json").write_text(json.dumps(document))
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "m"), "--previous", str(old)]
    assert main([*argv, "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert "not aligned to old" in out and "incompatible model schema version 0" in out
    lineage = load_model(tmp_path / "m").lineage
    assert lineage is not None and not lineage.aligned and lineage.transitions is None


def test_a_previous_version_that_does_not_exist_is_a_user_error(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = trained
    argv = ["train", "--data", str(data), "--out", str(tmp_path), "--previous", str(tmp_path / "x")]
    assert main(argv) == 2
    assert "no model" in capsys.readouterr().err
    assert not (tmp_path / "current").exists()


def test_predict_json_uses_the_apis_field_names(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from segstream.stream.http.openapi import openapi_document

    _, models = trained
    schema = openapi_document()["components"]["schemas"]["Prediction"]
    document = _predict(models, capsys)
    assert set(document) == set(schema["properties"]) == set(schema["required"])
    assert document["model_version"] == load_model(models / "current").version


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "--out", "{tmp}/file/x", "--users", "20"], "{tmp}/file is a file"),
        (["train", "--data", "{data}", "--out", "{tmp}/file"], "{tmp}/file is a file"),
        (
            ["assign", "--model", "{models}/current", "--data", "{data}", "--out", "{tmp}/dir/"],
            "is a directory; give a file name",
        ),
        (
            ["assign", "--model", "{models}/current", "--data", "{data}", "--out", "{tmp}/dir"],
            "is a directory; give a file name",
        ),
        (
            ["assign", "--model", "{models}/current", "--data", "{data}", "--out", "{tmp}/file/a"],
            "{tmp}/file is a file",
        ),
    ],
)
def test_a_bad_out_path_exits_2_naming_it_and_leaves_nothing_behind(
    tmp_path: Path,
    trained: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    data, models = trained
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "dir").mkdir()
    before = _tree(tmp_path)
    fill = {"tmp": tmp_path, "data": data, "models": models}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message.format(**fill) in err and "Traceback" not in err
    assert _tree(tmp_path) == before
    assert (tmp_path / "file").read_text() == "not a directory"


def test_training_on_too_few_users_is_refused_with_the_minimum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "--out", str(tmp_path / "data"), "--users", "4"]) == 0
    argv = ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "models")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "too few users to segment" in err and "at least 11" in err
    assert not (tmp_path / "models" / "current").exists()


def test_the_training_summary_fits_80_columns_without_truncating(
    tmp_path: Path,
    trained: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, _ = trained
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["train", "--data", str(data), "--out", str(tmp_path), "--k", "4"]) == 0
    out = capsys.readouterr().out
    summary = out[: out.index("first version")]
    assert "…" not in summary
    assert max(len(line) for line in summary.splitlines()) <= 80
    model = load_model(tmp_path / "current")
    # Every segment's profile is there, its top brand on a line of its own.
    for segment in range(model.k):
        assert f"│ {segment:>3} │" in summary
    assert summary.count("brand ") == model.k


def test_train_reads_a_sqlite_database(
    tmp_path: Path, trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlalchemy as sa

    from segstream.training.generate import TABLE_NAMES

    data, _ = trained
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'thelook.db'}")
    with engine.begin() as conn:
        for table in TABLE_NAMES:
            pd.read_parquet(data / f"{table}.parquet").to_sql(table, conn, index=False)
    engine.dispose()
    url = f"sqlite:///{tmp_path / 'thelook.db'}"
    argv = ["train", "--db", url, "--out", str(tmp_path / "models"), "--k", "3", "--seed", "1"]
    assert main(argv) == 0
    from_sqlite = pd.read_parquet(tmp_path / "models" / "current" / ASSIGNMENTS_FILE)
    assert len(from_sqlite) == len(read_features(DataSource(path=data)))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--age", "-5", "age must be a whole number from 0 to 120, got -5"),
        ("--age", "30.5", "age must be a whole number from 0 to 120, got 30.5"),
        ("--age", "thirty", 'age must be a whole number from 0 to 120, got "thirty"'),
        ("--total-orders", "-3", "total_orders must be a whole number from 0 to 1,000,000, got -3"),
        ("--country", "", 'country must be text of 1 to 64 characters, got ""'),
        ("--top", "51", "top must be a whole number from 0 to 50, got 51"),
    ],
)
def test_predict_refuses_a_value_its_rule_refuses_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    """Checked before the model is read: the same words as POST /predict and the stream."""
    argv = _predict_argv(tmp_path / "no-models")
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"segstream predict: {message}"


def test_predict_takes_a_whole_number_written_with_a_fraction(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, models = trained
    whole = _predict(models, capsys)
    argv = _predict_argv(models, "--json")
    argv[argv.index("--age") + 1] = "34.0"
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == whole


def test_assign_refuses_an_epoch_without_with_drift(
    tmp_path: Path, trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, models = trained
    out = tmp_path / "a.parquet"
    argv = ["assign", "--model", str(models / "current"), "--data", str(data), "--out", str(out)]
    assert main([*argv, "--epoch", "3"]) == 2
    assert "--epoch needs --with-drift" in capsys.readouterr().err
    assert main([*argv, "--with-drift", "--epoch", "-1"]) == 2
    assert "--epoch must be 0 or more" in capsys.readouterr().err
    assert not out.exists()
