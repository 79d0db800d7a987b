"""The model behind the API: predictions off the event loop, the same as ``predict_one``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from segstream.stream.http.serving import ServingModel
from segstream.training.artifact import Model
from segstream.training.pipeline import write_parquet
from segstream.training.prediction import ASSIGNMENTS_FILE, Prediction, predict_one

ROW = {
    "age": 52,
    "gender": "M",
    "country": "China",
    "traffic_source": "Search",
    "total_orders": 4,
    "most_frequent_brand": "Zara",
    "most_frequent_category": "Tops",
}


class _Watched(ServingModel):
    """Records the thread each reference read runs in."""

    def __init__(self, model_dir: Path) -> None:
        super().__init__(model_dir)
        self.reader_threads: list[int] = []

    def reference(self, model: Model) -> pd.DataFrame | None:
        self.reader_threads.append(threading.get_ident())
        return super().reference(model)


def _with_reference(models_dir: Callable[..., Path], model: Model, n: int) -> Path:
    version = models_dir(model)
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(
        {
            "user_id": np.arange(1, n + 1, dtype=np.int64),
            "segment": rng.integers(0, model.k, n),
            "component_1": rng.normal(size=n),
            "component_2": rng.normal(size=n),
            "unseen": np.zeros(n, dtype=bool),
        }
    )
    write_parquet(reference, version / ASSIGNMENTS_FILE)
    return version


def test_predict_reads_and_searches_the_reference_off_the_event_loop(
    models_dir: Callable[..., Path], model: Model
) -> None:
    version = _with_reference(models_dir, model, 20_000)
    serving = _Watched(version.parent)

    async def both() -> tuple[int, Model, Prediction]:
        used, prediction = await serving.predict(ROW, top=7)
        return threading.get_ident(), used, prediction

    loop_thread, used, prediction = asyncio.run(both())
    assert serving.reader_threads and loop_thread not in serving.reader_threads
    reference = pd.read_parquet(version / ASSIGNMENTS_FILE)
    expected = predict_one(used, ROW, reference, 7)
    pd.testing.assert_frame_equal(prediction.similar, expected.similar)
    assert len(expected.similar) == 7


def test_predict_without_a_reference_file_still_answers_with_no_similar_users(
    models_dir: Callable[..., Path], model: Model
) -> None:
    version = models_dir(model)
    _, prediction = asyncio.run(ServingModel(version.parent).predict(ROW, top=5))
    assert prediction.similar.empty
    assert prediction.segment == predict_one(model, ROW, None).segment
