"""Hot reload in the Assigner: a new version is picked up, a broken one refused and counted once."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from segstream.stream.http.metrics import Metrics
from segstream.stream.worker.assigner import Assigner
from segstream.training.artifact import ARRAYS_FILE, CURRENT_LINK, Model


def _failures(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("segstream_model_reload_failures_total") or 0.0


def _version_info(metrics: Metrics) -> dict[str, str]:
    families = {f.name: f for f in metrics.registry.collect()}
    (sample,) = families["segstream_model"].samples
    return dict(sample.labels)


def _point_current_at(root: Path, version: str) -> None:
    """Repoint ``current`` by hand (publish_current would refuse a broken version)."""
    staging = root / ".current.tmp"
    staging.symlink_to(version, target_is_directory=True)
    os.replace(staging, root / CURRENT_LINK)


def test_a_new_version_is_used_from_the_next_check(
    model: Model, models_dir: Callable[..., Path], new_model: Callable[..., Model]
) -> None:
    root = models_dir(model).parent
    metrics = Metrics()
    assigner = Assigner(root, check_every_s=0.0, metrics=metrics)
    models_dir(new_model("v2"))
    assert assigner.refresh()
    assert assigner.version == "v2"
    assert _version_info(metrics) == {"version": "v2"}
    assert not assigner.refresh(), "nothing moved since"


def test_current_is_not_read_again_before_the_check_interval(
    model: Model, models_dir: Callable[..., Path], new_model: Callable[..., Model]
) -> None:
    root = models_dir(model).parent
    assigner = Assigner(root, check_every_s=3600.0)
    models_dir(new_model("v2"))
    assert not assigner.refresh()
    assert assigner.version == "v1"


def test_a_corrupt_version_is_refused_counted_once_and_the_old_model_kept(
    model: Model, models_dir: Callable[..., Path], new_model: Callable[..., Model]
) -> None:
    root = models_dir(model).parent
    metrics = Metrics()
    assigner = Assigner(root, check_every_s=0.0, metrics=metrics)
    broken = models_dir(new_model("v2"), publish=False)
    arrays = (broken / ARRAYS_FILE).read_bytes()
    (broken / ARRAYS_FILE).write_bytes(arrays[: len(arrays) // 2])
    _point_current_at(root, "v2")

    assert not assigner.refresh()
    assert not assigner.refresh()
    assert assigner.version == "v1"
    assert assigner.refused is not None and "corrupt or truncated" in assigner.refused
    assert _failures(metrics) == 1
    assert _version_info(metrics) == {"version": "v1"}

    # The copy is completed in place: its files changed, so it is tried again and loads.
    (broken / ARRAYS_FILE).write_bytes(arrays)
    assert assigner.refresh()
    assert assigner.version == "v2"
    assert assigner.refused is None
    assert _failures(metrics) == 1


def test_current_pointing_nowhere_is_refused(model: Model, models_dir: Callable[..., Path]) -> None:
    root = models_dir(model).parent
    metrics = Metrics()
    assigner = Assigner(root, check_every_s=0.0, metrics=metrics)
    _point_current_at(root, "missing")
    assert not assigner.refresh()
    assert assigner.version == "v1"
    assert _failures(metrics) == 1


def test_each_new_refused_deploy_counts_again(
    model: Model, models_dir: Callable[..., Path], new_model: Callable[..., Model]
) -> None:
    root = models_dir(model).parent
    metrics = Metrics()
    assigner = Assigner(root, check_every_s=0.0, metrics=metrics)
    _point_current_at(root, "missing")
    assert not assigner.refresh()
    _point_current_at(root, "v1")  # rolled back: the refusal is over
    assert not assigner.refresh()
    assert assigner.refused is None
    _point_current_at(root, "missing")  # the same mistake, deployed again
    assert not assigner.refresh()
    assert _failures(metrics) == 2
