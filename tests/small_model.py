"""A small hand-made model (no training, no data files), for tests that need a real artifact."""

from __future__ import annotations

import numpy as np

from segstream.training.artifact import Model

VOCABULARIES = {
    "gender": ("F", "M"),
    "country": ("Brasil", "China", "Japan"),
    "traffic_source": ("Email", "Search"),
    "most_frequent_brand": ("Alpha", "Zara"),
    "most_frequent_category": ("Jeans", "Tops"),
}


def make_model(version: str = "v1", centers: object = None) -> Model:
    """Age and total_orders carry the first component, gender and category the second."""
    components = np.zeros((2, 7))
    components[0, 0], components[0, 4] = 0.8, 0.6  # age, total_orders
    components[1, 1], components[1, 6] = 0.6, 0.8  # gender, most_frequent_category
    return Model(
        version=version,
        vocabularies=VOCABULARIES,
        fallbacks={column: values[0] for column, values in VOCABULARIES.items()},
        scaler_mean=np.array([40.0, 0.5, 1.0, 0.5, 2.0, 0.5, 0.5]),
        scaler_scale=np.array([15.0, 0.5, 1.0, 0.5, 1.0, 0.5, 0.5]),
        pca_mean=np.zeros(7),
        pca_components=components,
        centers=np.array([[-1.0, -1.0], [1.0, -1.0], [0.0, 1.0]]) if centers is None else centers,
        n_rows=100,
        k_values=(3,),
        sse=(1.0,),
        silhouette=(0.5,),
        k_selection="fixed",
        seed=0,
        data_fingerprint="test",
        created_at="2026-01-01T00:00:00Z",
        explained_variance_ratio=(0.5, 0.3),
    )
