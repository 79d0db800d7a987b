"""The artifact: a lossless JSON + NPZ round trip that executes no code and refuses bad files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from segstream.errors import ArtifactError
from segstream.training.artifact import (
    ARRAYS_FILE,
    MODEL_FILE,
    Model,
    load_model,
    publish_current,
    save_model,
)
from segstream.training.lineage import Lineage, SegmentMatch, Transitions
from segstream.training.train import TrainResult


@pytest.fixture
def model(small_fit: TrainResult) -> Model:
    return small_fit.model


@pytest.fixture
def saved(model: Model, tmp_path: Path) -> Path:
    directory = tmp_path / "models" / model.version
    save_model(model, directory)
    return directory


def test_round_trip_keeps_everything_assignment_needs(model: Model, saved: Path) -> None:
    loaded = load_model(saved)
    for name in ("scaler_mean", "scaler_scale", "pca_mean", "pca_components", "centers"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert loaded.vocabularies == model.vocabularies
    assert loaded.fallbacks == model.fallbacks
    assert (loaded.k, loaded.n_rows, loaded.version) == (model.k, model.n_rows, model.version)
    assert loaded.k_values == model.k_values and loaded.sse == model.sse
    np.testing.assert_array_equal(loaded.silhouette, model.silhouette)
    assert loaded.data_fingerprint == model.data_fingerprint
    assert loaded.feature_columns == model.feature_columns


def test_arrays_are_stored_without_pickle(saved: Path) -> None:
    with np.load(saved / ARRAYS_FILE, allow_pickle=False) as npz:
        assert all(npz[name].dtype == np.float64 for name in npz.files)


def test_model_arrays_are_read_only(model: Model) -> None:
    with pytest.raises(ValueError):
        model.centers[0, 0] = 1.0


def test_truncated_arrays_are_refused(saved: Path) -> None:
    payload = (saved / ARRAYS_FILE).read_bytes()
    (saved / ARRAYS_FILE).write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        load_model(saved)


def test_altered_arrays_are_refused(saved: Path, model: Model) -> None:
    np.savez(
        saved / ARRAYS_FILE,
        **{
            "scaler_mean": model.scaler_mean,
            "scaler_scale": model.scaler_scale,
            "pca_mean": model.pca_mean,
            "pca_components": model.pca_components,
            "centers": model.centers + 1.0,
        },
    )
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        load_model(saved)


def test_corrupt_json_is_refused(saved: Path) -> None:
    text = (saved / MODEL_FILE).read_text()
    (saved / MODEL_FILE).write_text(text[: len(text) // 3])
    with pytest.raises(ArtifactError, match="cannot read"):
        load_model(saved)


def _edit(saved: Path, **changes: object) -> None:
    document = json.loads((saved / MODEL_FILE).read_text())
    document.update(changes)
    (saved / MODEL_FILE).write_text(json.dumps(document))


def test_other_schema_version_is_refused_as_incompatible(saved: Path) -> None:
    _edit(saved, schema_version=2)
    with pytest.raises(ArtifactError, match="incompatible model schema version 2"):
        load_model(saved)


def test_other_feature_columns_are_refused(saved: Path) -> None:
    document = json.loads((saved / MODEL_FILE).read_text())
    _edit(saved, feature_columns=["user_id", *document["feature_columns"][1:]])
    with pytest.raises(ArtifactError, match="differ from this segstream"):
        load_model(saved)


def test_unsorted_vocabulary_is_refused(saved: Path) -> None:
    document = json.loads((saved / MODEL_FILE).read_text())
    vocabularies = document["vocabularies"]
    vocabularies["country"] = list(reversed(vocabularies["country"]))
    _edit(saved, vocabularies=vocabularies)
    with pytest.raises(ArtifactError, match="vocabulary of country"):
        load_model(saved)


def test_missing_field_is_refused(saved: Path) -> None:
    document = json.loads((saved / MODEL_FILE).read_text())
    del document["fallbacks"]
    (saved / MODEL_FILE).write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="fallbacks"):
        load_model(saved)


def test_not_a_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / MODEL_FILE).write_text('{"hello": 1}')
    with pytest.raises(ArtifactError, match="not a segstream model"):
        load_model(tmp_path)
    with pytest.raises(ArtifactError, match="no model"):
        load_model(tmp_path / "absent")


def test_pickled_object_arrays_are_never_loaded(saved: Path, model: Model) -> None:
    import hashlib

    np.savez(
        saved / ARRAYS_FILE,
        scaler_mean=np.array([object()] * 7, dtype=object),
        scaler_scale=model.scaler_scale,
        pca_mean=model.pca_mean,
        pca_components=model.pca_components,
        centers=model.centers,
    )
    digest = hashlib.sha256((saved / ARRAYS_FILE).read_bytes()).hexdigest()
    _edit(saved, arrays={"file": ARRAYS_FILE, "sha256": digest})
    with pytest.raises(ArtifactError, match="not a valid model NPZ"):
        load_model(saved)


def test_publish_current_repoints_the_link(model: Model, tmp_path: Path) -> None:
    models = tmp_path / "models"
    first, second = models / "v1", models / "v2"
    save_model(model, first)
    save_model(dataclasses.replace(model, version="v2"), second)
    link = publish_current(models, first)
    assert link.is_symlink() and load_model(link).version == model.version
    publish_current(models, second)
    assert load_model(models / "current").version == "v2"
    assert load_model(models).version == "v2"  # MODELS itself resolves through current
    assert [p.name for p in models.iterdir() if p.name.startswith(".")] == []


def test_publish_refuses_a_broken_version_and_keeps_the_old_one(
    model: Model, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    save_model(model, models / "good")
    publish_current(models, models / "good")
    (models / "bad").mkdir()
    with pytest.raises(ArtifactError):
        publish_current(models, models / "bad")
    assert load_model(models / "current").version == model.version


def test_publish_refuses_to_replace_a_real_directory(model: Model, tmp_path: Path) -> None:
    models = tmp_path / "models"
    save_model(model, models / "v1")
    (models / "current").mkdir()
    with pytest.raises(ArtifactError, match="not a symlink"):
        publish_current(models, models / "v1")


def test_inconsistent_model_cannot_be_built(model: Model) -> None:
    with pytest.raises(ArtifactError, match="centers"):
        dataclasses.replace(model, centers=np.zeros((3, 3)))
    with pytest.raises(ArtifactError, match="fallback"):
        dataclasses.replace(model, fallbacks={**model.fallbacks, "country": "Atlantis"})


def _lineage() -> Lineage:
    return Lineage(
        previous_version="20240101T000000Z-1a2b3c4d",
        aligned=True,
        reason="segment ids follow 20240101T000000Z-1a2b3c4d",
        matches=(
            SegmentMatch(0, 2, 0.125),
            SegmentMatch(1, 1, 0.0),
            SegmentMatch(2, 0, 1.5),
            SegmentMatch(3, None, None),
        ),
        absent_values={"country": 0, "most_frequent_brand": 3},
        transitions=Transitions(((5, 0, 1, 0), (0, 7, 0, 2), (1, 0, 9, 0))),
    )


def test_lineage_round_trips(model: Model, tmp_path: Path) -> None:
    assert model.k == 4
    directory = tmp_path / "v"
    save_model(dataclasses.replace(model, lineage=_lineage()), directory)
    assert load_model(directory).lineage == _lineage()


def test_an_artifact_from_before_lineage_loads_without_one(saved: Path) -> None:
    document = json.loads((saved / MODEL_FILE).read_text())
    del document["lineage"]
    (saved / MODEL_FILE).write_text(json.dumps(document))
    assert load_model(saved).lineage is None


def test_malformed_lineage_is_refused(model: Model, tmp_path: Path) -> None:
    directory = tmp_path / "v"
    save_model(dataclasses.replace(model, lineage=_lineage()), directory)
    document = json.loads((directory / MODEL_FILE).read_text())
    document["lineage"]["matches"][0]["previous"] = "two"
    (directory / MODEL_FILE).write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match=r"matches\.previous"):
        load_model(directory)


def test_lineage_must_number_every_segment(model: Model) -> None:
    with pytest.raises(ArtifactError, match=r"number segments 0\.\.3"):
        dataclasses.replace(
            model, lineage=dataclasses.replace(_lineage(), matches=_lineage().matches[:3])
        )
    with pytest.raises(ArtifactError, match="4 columns"):
        dataclasses.replace(
            model, lineage=dataclasses.replace(_lineage(), transitions=Transitions(((1, 2),)))
        )
