"""The model lifecycle on the real stack: two model versions, a shifting customer base, helpers.

Builds on ``tests/integration/stream/conftest.py`` (the 8,000-user dataset trained with k=5,
worker processes, replay). Added here, once a session:

- :func:`versions`: a MODELS template holding the dataset's model (v1) and a second version
  trained on the same data with k=6, its ids aligned to v1 (so most users keep their segment
  and some move); each test gets its own copy (:func:`models_dir`), ``current`` -> v1;
- :func:`shifted`: a stream of new customers unlike the training ones (every user 15 years
  older, buying from another mix of categories), with the true centres of that population in
  the model's PCA space.

Per test, :func:`switch_under_load` switches a running worker from v1 to v2 while the
dataset's events keep flowing in.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sklearn.cluster import KMeans

from segstream.settings import Settings
from segstream.stream.lifecycle.replay import (
    ReplayPlan,
    read_replay_plan,
)
from segstream.training.artifact import Model, load_model, publish_current
from segstream.training.assign import assign
from segstream.training.data import DataSource, read_features
from segstream.training.generate import Tables, generate_tables, load_catalogue, write_tables
from segstream.training.pipeline import train_to_directory
from segstream.training.train import TrainConfig
from tests.integration.stream.background import BackgroundReplay
from tests.integration.stream.conftest import (
    PRODUCTS,
    Dataset,
    WorkerProcess,
    replay,
    wait_until_consumed,
)

AGE_SHIFT = 15
"""Years added to every shifted customer's age."""
SHIFTED_USERS = 12_000
"""New customers of the drift tests: enough that both probe rounds find users whose segment
the drifted centres decide, however far the stored segments have followed (6,000 once left
28, too few; test_drift_stream.py)."""


@dataclass(frozen=True)
class Versions:
    """A MODELS template with two versions of the dataset's model."""

    template: Path
    v1: Model
    v2: Model


@pytest.fixture(scope="session")
def versions(dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Versions:
    """v1: the dataset's model (k=5); v2: retrained on the same data with k=6, ids aligned."""
    template = tmp_path_factory.mktemp("lifecycle-models")
    v1 = dataset.model
    shutil.copytree(dataset.models_dir / v1.version, template / v1.version)
    publish_current(template, template / v1.version)
    config = TrainConfig(k=6, k_values=(6,), n_init=2, silhouette_sample=2_000, seed=1)
    outcome = train_to_directory(DataSource(path=dataset.data_dir), template, config)
    v2 = load_model(outcome.version_dir)
    assert v2.lineage is not None and v2.lineage.previous_version == v1.version
    publish_current(template, template / v1.version)
    return Versions(template, v1, v2)


@pytest.fixture
def models_dir(versions: Versions, tmp_path: Path) -> Path:
    """This test's own copy of the template; ``current`` -> v1."""
    root = tmp_path / "models"
    shutil.copytree(versions.template, root, symlinks=True)
    return root


def switch_to(models_dir: Path, version: str) -> None:
    """Point ``current`` at ``version`` (atomically, as training does)."""
    publish_current(models_dir, models_dir / version)


@dataclass(frozen=True)
class Shifted:
    """New customers unlike the training ones, as a stream."""

    plan: ReplayPlan
    features: pd.DataFrame
    """Their feature rows (the SQL's), at the end of the stream."""
    components: np.ndarray
    """(n, 2) those rows in the model's PCA space."""
    true_centers: np.ndarray
    """(k, 2) k-means of ``components`` started from the trained centres: where segments
    0..k-1 are for this population."""


def shift_tables(tables: Tables, seed: int) -> Tables:
    """``tables`` with every user AGE_SHIFT years older, buying only from the first quarter of
    the categories (alphabetically), in their department."""
    users = tables.users
    age = users.schema.get_field_index("age")
    users = users.set_column(age, "age", pc.add(users.column("age"), AGE_SHIFT))
    products = tables.products.to_pandas()
    categories = sorted(products["category"].dropna().unique())
    chosen = set(categories[: max(1, len(categories) // 4)])
    items = tables.order_items.to_pandas()
    gender = tables.orders.to_pandas().set_index("order_id").loc[items["order_id"], "gender"]
    rng = np.random.default_rng(seed)
    picked = items["product_id"].to_numpy().copy()
    for g, department in (("F", "Women"), ("M", "Men")):
        in_mix = products["category"].isin(chosen)
        if "department" in products:
            in_mix &= products["department"] == department
        pool = products.loc[in_mix, "id"].to_numpy()
        rows = np.flatnonzero(gender.to_numpy() == g)
        picked[rows] = pool[rng.integers(0, pool.size, rows.size)]
    items["product_id"] = picked
    items["sale_price"] = products.set_index("id")["retail_price"].reindex(picked).to_numpy()
    order_items = pa.Table.from_pandas(
        items, schema=tables.order_items.schema, preserve_index=False
    )
    return Tables(users, tables.orders, order_items, tables.products)


@pytest.fixture(scope="session")
def shifted(dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Shifted:
    """SHIFTED_USERS new customers (seed 11), shifted by :func:`shift_tables`."""
    directory = tmp_path_factory.mktemp("shifted") / "data"
    products = load_catalogue(PRODUCTS) if PRODUCTS.exists() else None
    write_tables(shift_tables(generate_tables(SHIFTED_USERS, 11, products), 11), directory)
    source = DataSource(path=directory)
    features = read_features(source)
    components = assign(dataset.model, features).components
    model = dataset.model
    fit = KMeans(model.k, init=model.centers, n_init=1, random_state=0).fit(components)
    return Shifted(read_replay_plan(source), features, components, fit.cluster_centers_)


@dataclass(frozen=True)
class UnderLoad:
    """A worker that switched models while events flowed: see :func:`switch_under_load`."""

    settings: Settings
    """The test's settings, on its own copy of the models (:func:`models_dir`)."""
    worker: WorkerProcess
    flow: BackgroundReplay
    """The replay of the dataset's events after the first ``before``, still running."""
    switched_at: float
    """time.monotonic() when ``current`` was pointed at v2."""


@pytest.fixture
def switch_under_load(
    stream_settings: Settings,
    dataset: Dataset,
    versions: Versions,
    models_dir: Path,
    start_worker: Callable[[Settings], WorkerProcess],
    background_replays: list[BackgroundReplay],
) -> Callable[..., UnderLoad]:
    """Factory: ``switch_under_load(before, rate, share, first_rate=None) -> UnderLoad``.

    Starts a worker on v1, replays the dataset's first ``before`` events (paced at
    ``first_rate`` events/s, or flat out) and waits until they are consumed; then replays the
    rest at ``rate`` in the background and, once ``share`` of those were sent, points
    ``current`` at v2.
    """

    def run(before: int, rate: float, share: float, first_rate: float | None = None) -> UnderLoad:
        settings = stream_settings.model_copy(update={"model_dir": models_dir})
        worker = start_worker(settings)
        replay(settings, ReplayPlan(dataset.plan.events[:before], 0), rate=first_rate)
        wait_until_consumed(settings, [worker])
        flow = BackgroundReplay(settings, dataset.plan.events[before:], rate=rate)
        background_replays.append(flow)
        flow.wait_for(share)
        switch_to(models_dir, versions.v2.version)
        return UnderLoad(settings, worker, flow, time.monotonic())

    return run
