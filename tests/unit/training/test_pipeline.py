"""What training records: the version, who was left out, what the report says of it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from segstream.training.artifact import load_model
from segstream.training.data import DataSource, read_exclusions
from segstream.training.features import Exclusions
from segstream.training.pipeline import REPORT_FILE, train_to_directory
from segstream.training.train import TrainConfig


def test_training_records_who_was_left_out_and_the_report_says_it(
    small_data: Path, tmp_path: Path
) -> None:
    source = DataSource(path=small_data)
    config = TrainConfig(k=3, k_values=(3,), silhouette_sample=500)
    outcome = train_to_directory(source, tmp_path / "models", config)
    model = load_model(outcome.version_dir)
    exclusions = read_exclusions(source)
    assert Exclusions.from_json(model.extra["exclusions"]) == exclusions
    users = len(pd.read_parquet(small_data / "users.parquet"))
    assert exclusions.segmented == model.n_rows and exclusions.users == users
    page = (outcome.version_dir / REPORT_FILE).read_text(encoding="utf-8")
    assert f"{model.n_rows:,} of {users:,} in the data" in page
    assert f"{exclusions.no_orders:,} without any order" in page
