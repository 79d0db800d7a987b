"""Shared fixtures of the training unit tests: small generated thelook data and a model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from segstream.training.data import DataSource, read_features
from segstream.training.generate import generate_tables, load_catalogue, write_tables
from segstream.training.train import TrainConfig, TrainResult, fit

REAL_PRODUCTS = Path(__file__).resolve().parents[3] / "../shared/data/thelook/products.parquet"
"""thelook's real catalogue, beside the repository; tests that need it skip without it."""

SMALL_USERS = 4_000


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of 4,000 generated users (generated catalogue), seed 7."""
    directory = tmp_path_factory.mktemp("thelook-small")
    write_tables(generate_tables(SMALL_USERS, seed=7), directory)
    return directory


@pytest.fixture(scope="session")
def small_features(small_data: Path) -> pd.DataFrame:
    return read_features(DataSource(path=small_data))


@pytest.fixture(scope="session")
def small_fit(small_features: pd.DataFrame) -> TrainResult:
    """A k=4 fit of the small features (a short elbow keeps it fast)."""
    return fit(small_features, TrainConfig(k=4, k_values=(3, 4, 5), silhouette_sample=1_000))


@pytest.fixture(scope="session")
def real_products() -> Path:
    if not REAL_PRODUCTS.is_file():
        pytest.skip("thelook's products.parquet is not beside the repository")
    load_catalogue(REAL_PRODUCTS)
    return REAL_PRODUCTS
