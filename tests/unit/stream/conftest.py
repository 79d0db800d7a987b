"""The stream unit tests' models: :func:`tests.small_model.make_model` (no training, no data)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from segstream.training.artifact import Model, publish_current, save_model
from tests.small_model import make_model


@pytest.fixture
def model() -> Model:
    return make_model()


@pytest.fixture
def new_model() -> Callable[..., Model]:
    """Factory: ``new_model(version="v1", centers=None) -> Model`` (see :func:`make_model`)."""
    return make_model


@pytest.fixture
def models_dir(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``add(model, publish=True) -> version dir`` under one MODELS directory."""
    root = tmp_path / "models"

    def add(model: Model, publish: bool = True) -> Path:
        directory = root / model.version
        save_model(model, directory)
        if publish:
            publish_current(root, directory)
        return directory

    return add
