"""The model artifact: a version directory of ``model.json`` + ``arrays.npz``, loaded without code.

Layout of ``MODELS/``::

    MODELS/<version>/model.json        metadata, vocabularies, curves, sha256 of arrays.npz
    MODELS/<version>/arrays.npz        scaler_mean, scaler_scale, pca_mean, pca_components,
                                       centers (float64, no object arrays)
    MODELS/<version>/report.html       written by training (not needed for assignment)
    MODELS/<version>/assignments.parquet  training users' segment and components
    MODELS/current -> <version>        symlink, swapped atomically by publish_current

``model.json`` also records the version's lineage (:mod:`segstream.training.lineage`): the
previous version, whether the segment ids were aligned to it and how; ``null`` in artifacts
written before lineage existed, which load with ``Model.lineage = None``.

Loading parses JSON and reads the NPZ with ``allow_pickle=False``: nothing in an artifact can
run code. A file that does not parse, an NPZ whose sha256 differs from the one recorded (a
truncated or altered file), a schema version other than :data:`SCHEMA_VERSION`, feature
columns other than this code's, or arrays of the wrong shape are refused with
:class:`~segstream.errors.ArtifactError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from segstream.errors import ArtifactError
from segstream.training.features import CATEGORICAL_COLUMNS, FEATURE_COLUMNS, NUMERIC_COLUMNS
from segstream.training.lineage import Lineage, lineage_from_json, lineage_to_json

__all__ = [
    "ARRAYS_FILE",
    "CURRENT_LINK",
    "FORMAT",
    "MODEL_FILE",
    "SCHEMA_VERSION",
    "Model",
    "load_model",
    "publish_current",
    "resolve_model_dir",
    "save_model",
]

SCHEMA_VERSION = 1
"""Version of the artifact layout; bumped on any incompatible change."""
FORMAT = "segstream-model"
MODEL_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"
CURRENT_LINK = "current"
_ARRAY_NAMES = ("scaler_mean", "scaler_scale", "pca_mean", "pca_components", "centers")
_N_COMPONENTS = 2


@dataclass(frozen=True, eq=False)
class Model:
    """Everything assignment needs, plus how the model was made. Arrays are read-only.

    Shapes (``f`` = len(feature_columns) = 7, ``k`` = number of segments):
    ``scaler_mean``/``scaler_scale``/``pca_mean`` (f,), ``pca_components`` (2, f),
    ``centers`` (k, 2). ``vocabularies[c]`` is column ``c``'s sorted (code point order) training
    values: a value's code is its index, as sklearn's LabelEncoder. ``fallbacks[c]`` is the
    value an unseen category of ``c`` is encoded as (the column's most frequent training value).
    ``k_values``/``sse``/``silhouette`` are the elbow curves (silhouette on a sample).
    ``lineage`` says which version this one follows and how its segment ids were numbered
    (``None``: not recorded).
    """

    version: str
    vocabularies: Mapping[str, tuple[str, ...]]
    fallbacks: Mapping[str, str]
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    pca_mean: np.ndarray
    pca_components: np.ndarray
    centers: np.ndarray
    n_rows: int
    k_values: tuple[int, ...]
    sse: tuple[float, ...]
    silhouette: tuple[float, ...]
    k_selection: str
    seed: int
    data_fingerprint: str
    created_at: str
    explained_variance_ratio: tuple[float, ...]
    feature_columns: tuple[str, ...] = FEATURE_COLUMNS
    numeric_columns: tuple[str, ...] = NUMERIC_COLUMNS
    categorical_columns: tuple[str, ...] = CATEGORICAL_COLUMNS
    schema_version: int = SCHEMA_VERSION
    extra: Mapping[str, object] = field(default_factory=dict)
    lineage: Lineage | None = None

    def __post_init__(self) -> None:
        for name in _ARRAY_NAMES:
            array = np.array(getattr(self, name), dtype=np.float64, copy=True)
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        _check(self)

    @property
    def k(self) -> int:
        """Number of segments (rows of ``centers``)."""
        return int(self.centers.shape[0])


def _check(model: Model) -> None:
    """Raise ArtifactError unless ``model`` is internally consistent and matches this code."""
    if model.schema_version != SCHEMA_VERSION:
        raise ArtifactError(
            f"incompatible model schema version {model.schema_version}; "
            f"this segstream reads version {SCHEMA_VERSION} (retrain the model)"
        )
    expected = (FEATURE_COLUMNS, NUMERIC_COLUMNS, CATEGORICAL_COLUMNS)
    actual = (model.feature_columns, model.numeric_columns, model.categorical_columns)
    if tuple(map(tuple, actual)) != expected:
        raise ArtifactError(
            f"model features {list(model.feature_columns)} differ from this segstream's "
            f"{list(FEATURE_COLUMNS)} (retrain the model)"
        )
    f = len(FEATURE_COLUMNS)
    shapes = {
        "scaler_mean": (f,),
        "scaler_scale": (f,),
        "pca_mean": (f,),
        "pca_components": (_N_COMPONENTS, f),
    }
    for name, shape in shapes.items():
        if getattr(model, name).shape != shape:
            raise ArtifactError(f"{name} has shape {getattr(model, name).shape}, expected {shape}")
    if model.centers.ndim != 2 or model.centers.shape[1] != _N_COMPONENTS or model.k < 1:
        raise ArtifactError(f"centers has shape {model.centers.shape}, expected (k, 2)")
    for name in _ARRAY_NAMES:
        if not np.isfinite(getattr(model, name)).all():
            raise ArtifactError(f"{name} holds non-finite values")
    if (model.scaler_scale <= 0).any():
        raise ArtifactError("scaler_scale must be positive")
    for column in CATEGORICAL_COLUMNS:
        vocab = model.vocabularies.get(column)
        if not vocab or list(vocab) != sorted(set(vocab)):
            raise ArtifactError(f"vocabulary of {column} is missing, unsorted or repeats values")
        if model.fallbacks.get(column) not in vocab:
            raise ArtifactError(f"fallback of {column} is not in its vocabulary")
    if not len(model.k_values) == len(model.sse) == len(model.silhouette):
        raise ArtifactError("elbow curves k_values, sse and silhouette differ in length")
    if model.lineage is not None:
        model.lineage.check(model.k)


def _to_json(model: Model, arrays_sha256: str) -> dict[str, object]:
    return {
        "format": FORMAT,
        "schema_version": model.schema_version,
        "version": model.version,
        "created_at": model.created_at,
        "feature_columns": list(model.feature_columns),
        "numeric_columns": list(model.numeric_columns),
        "categorical_columns": list(model.categorical_columns),
        "vocabularies": {c: list(v) for c, v in model.vocabularies.items()},
        "fallbacks": dict(model.fallbacks),
        "k": model.k,
        "n_rows": model.n_rows,
        "seed": model.seed,
        "k_selection": model.k_selection,
        # JSON has no NaN: an undefined silhouette is stored as null.
        "elbow": {
            "k": list(model.k_values),
            "sse": list(model.sse),
            "silhouette": [None if math.isnan(s) else s for s in model.silhouette],
        },
        "explained_variance_ratio": list(model.explained_variance_ratio),
        "data_fingerprint": model.data_fingerprint,
        "extra": dict(model.extra),
        "lineage": None if model.lineage is None else lineage_to_json(model.lineage),
        "arrays": {"file": ARRAYS_FILE, "sha256": arrays_sha256},
    }


def save_model(model: Model, directory: Path) -> None:
    """Write ``model`` into ``directory`` (created if needed) as arrays.npz then model.json.

    model.json is written last and records the NPZ's sha256, so a directory whose writing was
    interrupted never loads. Training writes into a staging directory and renames it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **{name: getattr(model, name) for name in _ARRAY_NAMES})
    payload = buffer.getvalue()
    (directory / ARRAYS_FILE).write_bytes(payload)
    document = _to_json(model, hashlib.sha256(payload).hexdigest())
    text = json.dumps(document, indent=1, ensure_ascii=False, allow_nan=False)
    (directory / MODEL_FILE).write_text(text + "\n", encoding="utf-8")


def resolve_model_dir(path: Path) -> Path:
    """The version directory named by ``path``: a version dir, ``current``, or MODELS itself."""
    if not (path / MODEL_FILE).exists() and (path / CURRENT_LINK / MODEL_FILE).exists():
        path = path / CURRENT_LINK
    if not path.exists():
        raise ArtifactError(f"no model at {path}")
    return path.resolve()


_T = TypeVar("_T")


def _field(document: Mapping[str, object], name: str, kind: type[_T]) -> _T:
    value = document.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ArtifactError(f"{MODEL_FILE}: field {name!r} is missing or not {kind}")
    return value


def _str_tuple(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ArtifactError(f"{MODEL_FILE}: {what} must be a list of strings")
    return tuple(value)


def _float_tuple(value: object, what: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in value
    ):
        raise ArtifactError(f"{MODEL_FILE}: {what} must be a list of numbers")
    return tuple(math.nan if v is None else float(v) for v in value)


def _read_arrays(directory: Path, sha256: str) -> dict[str, np.ndarray]:
    try:
        payload = (directory / ARRAYS_FILE).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {directory / ARRAYS_FILE}: {exc}") from exc
    if hashlib.sha256(payload).hexdigest() != sha256:
        raise ArtifactError(
            f"{directory / ARRAYS_FILE} is corrupt or truncated (its sha256 differs from the "
            f"one recorded in {MODEL_FILE})"
        )
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in _ARRAY_NAMES}
    except (KeyError, ValueError, OSError, EOFError) as exc:
        raise ArtifactError(f"{directory / ARRAYS_FILE} is not a valid model NPZ: {exc}") from exc
    for name, array in arrays.items():
        if array.dtype != np.float64:
            raise ArtifactError(f"{ARRAYS_FILE}: {name} has dtype {array.dtype}, expected float64")
    return arrays


def load_model(path: Path) -> Model:
    """Load the model at ``path`` (a version directory, ``MODELS/current`` or ``MODELS``).

    Raises:
        ArtifactError: missing, unparsable, corrupt, truncated, or incompatible artifact.
    """
    directory = resolve_model_dir(Path(path))
    try:
        document = json.loads((directory / MODEL_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {directory / MODEL_FILE}: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ArtifactError(f"{directory / MODEL_FILE} is not a segstream model")
    schema = document.get("schema_version")
    if schema != SCHEMA_VERSION:
        raise ArtifactError(
            f"incompatible model schema version {schema!r} in {directory}; this segstream "
            f"reads version {SCHEMA_VERSION} (retrain the model)"
        )
    arrays_info = _field(document, "arrays", dict)
    sha = arrays_info.get("sha256") if isinstance(arrays_info, dict) else None
    if not isinstance(sha, str):
        raise ArtifactError(f"{MODEL_FILE}: arrays.sha256 is missing")
    arrays = _read_arrays(directory, sha)
    elbow = _field(document, "elbow", dict)
    assert isinstance(elbow, dict)
    vocab_doc = _field(document, "vocabularies", dict)
    fallbacks = _field(document, "fallbacks", dict)
    assert isinstance(vocab_doc, dict) and isinstance(fallbacks, dict)
    k_values = elbow.get("k")
    if not isinstance(k_values, list) or not all(isinstance(k, int) for k in k_values):
        raise ArtifactError(f"{MODEL_FILE}: elbow.k must be a list of integers")
    model = Model(
        version=str(_field(document, "version", str)),
        vocabularies={c: _str_tuple(v, f"vocabularies.{c}") for c, v in vocab_doc.items()},
        fallbacks={str(c): str(v) for c, v in fallbacks.items()},
        n_rows=int(_field(document, "n_rows", int)),
        k_values=tuple(k_values),
        sse=_float_tuple(elbow.get("sse"), "elbow.sse"),
        silhouette=_float_tuple(elbow.get("silhouette"), "elbow.silhouette"),
        k_selection=str(_field(document, "k_selection", str)),
        seed=int(_field(document, "seed", int)),
        data_fingerprint=str(_field(document, "data_fingerprint", str)),
        created_at=str(_field(document, "created_at", str)),
        explained_variance_ratio=_float_tuple(
            document.get("explained_variance_ratio"), "explained_variance_ratio"
        ),
        feature_columns=_str_tuple(document.get("feature_columns"), "feature_columns"),
        numeric_columns=_str_tuple(document.get("numeric_columns"), "numeric_columns"),
        categorical_columns=_str_tuple(document.get("categorical_columns"), "categorical_columns"),
        schema_version=SCHEMA_VERSION,
        extra=dict(_field(document, "extra", dict)),
        lineage=None if document.get("lineage") is None else lineage_from_json(document["lineage"]),
        **arrays,
    )
    if document.get("k") != model.k:
        raise ArtifactError(f"{MODEL_FILE}: k={document.get('k')!r} but centers has {model.k} rows")
    return model


def publish_current(models_dir: Path, version_dir: Path) -> Path:
    """Point ``models_dir/current`` at ``version_dir`` atomically; returns the link's path.

    A relative symlink is made under a temporary name and renamed over ``current``, so a
    reader sees either the old or the new version, never neither.

    Raises:
        ArtifactError: ``version_dir`` is not a loadable model inside ``models_dir``, or
            ``current`` exists and is not a symlink.
    """
    version_dir = version_dir.resolve()
    if version_dir.parent != models_dir.resolve():
        raise ArtifactError(f"{version_dir} is not a version directory of {models_dir}")
    load_model(version_dir)  # never point current at something that does not load
    link = models_dir / CURRENT_LINK
    if link.exists() and not link.is_symlink():
        raise ArtifactError(f"{link} exists and is not a symlink; refusing to replace it")
    staging = models_dir / f".{CURRENT_LINK}.{os.getpid()}.tmp"
    if staging.is_symlink() or staging.exists():
        staging.unlink()
    staging.symlink_to(version_dir.name, target_is_directory=True)
    os.replace(staging, link)
    return link
