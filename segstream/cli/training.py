"""``segstream generate | train | assign | predict | bench training``: the offline half's verbs.

Each handler parses nothing itself: it turns arguments into the library calls of
:mod:`segstream.training.pipeline` and prints the outcome. User errors are raised as
:class:`~segstream.errors.SegstreamError` subclasses, which ``segstream.cli`` prints (exit 2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from segstream.errors import ConfigError
from segstream.settings import load_settings

if TYPE_CHECKING:
    from segstream.training.artifact import Model
    from segstream.training.data import DataSource
    from segstream.training.generate import Tables

__all__ = ["PREDICT_OPTIONS", "add_commands", "predict_row"]

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _k_value(text: str) -> int | None:
    """``--k``: ``auto`` (None) or a whole number in 2..10."""
    if text == "auto":
        return None
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a number 2..10, got {text!r}"
        ) from None
    if not 2 <= k <= 10:
        raise argparse.ArgumentTypeError(f"k must be between 2 and 10, got {k}")
    return k


def _add_source(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument(
        "--data",
        metavar="DIR",
        help="directory of users/orders/order_items/products Parquet or CSV files (read by DuckDB)",
    )
    group.add_argument(
        "--db",
        metavar="URL",
        help="SQLAlchemy URL of a PostgreSQL or SQLite database holding the four tables, "
        "e.g. postgresql://user@host/db or sqlite:///thelook.db",
    )


def _source(args: argparse.Namespace) -> DataSource | None:
    from segstream.training.data import DataSource
    from segstream.training.features import feature_sql

    if args.data is None and args.db is None:
        return None
    source = DataSource.from_args(args.data, args.db)
    feature_sql(source.dialect())  # an unsupported database is refused before any work
    return source


def _required_source(args: argparse.Namespace) -> DataSource:
    """:func:`_source` of a verb whose parser requires ``--data`` or ``--db``."""
    source = _source(args)
    if source is None:
        raise ConfigError("give the input tables: --data DIR or --db URL")
    return source


def _models_dir(args: argparse.Namespace) -> Path:
    """``--out`` of train, or ``SEGSTREAM_MODEL_DIR`` (read only when needed), checked."""
    if args.out:
        return _checked_dir(args.out)
    return _checked_dir(str(load_settings().model_dir), "SEGSTREAM_MODEL_DIR")


def _model_path(args: argparse.Namespace) -> Path:
    """``--model``, or ``SEGSTREAM_MODEL_DIR/current``."""
    return Path(args.model) if args.model else load_settings().model_dir / "current"


def _checked_dir(text: str, option: str = "--out", given: str | None = None) -> Path:
    """``text`` as a directory this process can create or write into; nothing is created.

    Checked before any work, so that a long run does not end on a bad path. ``given`` is
    the option's value when ``text`` is derived from it (a file's directory).

    Raises:
        ConfigError: the path is a file, lies under a file, or is not writable.
    """
    path = Path(text)
    existing = path
    while not existing.exists():  # the nearest ancestor that exists: mkdir starts there
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option} {given or text}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {given or text}: {existing} is not writable by this user")
    return path


def _checked_file(text: str, option: str = "--out") -> Path:
    """``text`` as a file this process can write (its directory created if need be).

    Raises:
        ConfigError: the path is (or ends like) a directory, or its directory cannot be made.
    """
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        example = Path(text) / "assigned.parquet"
        raise ConfigError(f"{option} {text} is a directory; give a file name, e.g. {example}")
    path = Path(text)
    _checked_dir(str(path.parent), option, given=text)
    return path


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display on stderr, driven by ``(step, done, total)`` callbacks."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        tasks: dict[str, object] = {}

        def update(step: str, done: int, total: int) -> None:
            key = step.split(",")[0]  # "k-means elbow, k=3" updates the "k-means elbow" bar
            if key not in tasks:
                tasks[key] = bar.add_task(step, total=total)
            bar.update(tasks[key], completed=done, total=total, description=step)  # type: ignore[arg-type]

        yield update


def _generate(args: argparse.Namespace) -> int:
    from segstream.training.generate import (
        generate_catalogue,
        generate_tables,
        load_catalogue,
        write_tables,
    )

    if (args.out is None) == (args.db is None):
        raise ConfigError("give one of --out DIR (Parquet files) or --db URL (PostgreSQL)")
    if args.catalogue_size < 1:
        raise ConfigError("--catalogue-size must be at least 1")
    out = _checked_dir(args.out) if args.out is not None else None
    started = time.perf_counter()
    if args.products:
        catalogue = load_catalogue(Path(args.products))
    else:
        catalogue = generate_catalogue(args.seed, args.catalogue_size)
    tables = generate_tables(args.users, args.seed, catalogue)
    if out is not None:
        paths = write_tables(tables, out)
        for name, path in paths.items():
            print(f"{getattr(tables, name).num_rows:>10,} rows  {path}")
    else:
        _generate_database(args, tables)
    elapsed = time.perf_counter() - started
    print(f"generated {args.users:,} users in {elapsed:.1f}s (seed {args.seed})")
    return 0


def _generate_database(args: argparse.Namespace, tables: Tables) -> None:
    """The database sink: the tables, then the publication change data capture reads."""
    from urllib.parse import urlsplit

    from segstream.cdc.database import prepare_capture
    from segstream.training.postgres_sink import connect, write_database

    settings = load_settings()
    counts = write_database(tables, args.db, settings.cdc_schema, replace=args.replace)
    with connect(args.db, autocommit=True) as conn:
        prepare_capture(conn, settings, urlsplit(settings.cdc_database_url).username)
    where = urlsplit(args.db)
    for name, rows in counts.items():
        print(
            f"{rows:>10,} rows  {where.hostname}:{where.port or 5432}{where.path}"
            f"  {settings.cdc_schema}.{name}"
        )
    print(
        f"publication {settings.cdc_publication} publishes the four tables (REPLICA IDENTITY FULL)"
    )


def _train(args: argparse.Namespace) -> int:
    from segstream.training.features import Exclusions
    from segstream.training.lineage_report import lineage_renderables
    from segstream.training.pipeline import train_to_directory
    from segstream.training.report import summary_table
    from segstream.training.train import TrainConfig

    config = TrainConfig(k=args.k, seed=args.seed)
    models_dir = _models_dir(args)
    started = time.perf_counter()
    previous = Path(args.previous) if args.previous else None
    with _progress() as progress:
        outcome = train_to_directory(
            _required_source(args), models_dir, config, progress, previous, not args.no_align
        )
    model = outcome.result.model
    console = Console()
    console.print(summary_table(model, outcome.profiles, console.width))
    for renderable in lineage_renderables(model.lineage):
        console.print(renderable)
    elbow = ", ".join(
        f"{k}: {s:,.0f}/" + (f"{sil:.3f}" if math.isfinite(sil) else "n/a")
        for k, s, sil in zip(model.k_values, model.sse, model.silhouette, strict=True)
    )
    console.print(f"elbow (k: SSE/silhouette): {elbow}")
    console.print(f"k: {model.k_selection}")
    if outcome.result.dropped_rows:
        console.print(f"dropped {outcome.result.dropped_rows:,} rows with missing values")
    exclusions = Exclusions.from_json(model.extra.get("exclusions"))
    if exclusions is not None:
        for key, n in exclusions.refused.items():
            example = escape(exclusions.refused_examples.get(key, ""))
            console.print(f"[yellow]left out {n:,} users[/yellow] ({key}): e.g. {example}")
    console.print(f"model {outcome.version_dir} (current -> {model.version})")
    console.print(f"report {outcome.version_dir / 'report.html'}")
    console.print(f"trained in {time.perf_counter() - started:.1f}s")
    return 0


def _drift_models(args: argparse.Namespace, model: Model) -> list[tuple[Model, int]]:
    """``--with-drift``: the model with each asked epoch's centres (``--epoch``, else the
    newest), and the epoch's number, read from the Redis and app of the settings."""
    from segstream.cli.deadline import REDIS, CommandDeadline
    from segstream.stream.drift.centroids import drifted_model
    from segstream.stream.drift.shared import load_epochs

    numbers: list[int | None] = list(args.epoch) if args.epoch else [None]
    if any(n is not None and n < 0 for n in numbers):
        raise ConfigError("--epoch must be 0 or more (0: the trained centres)")
    settings = load_settings()
    deadline = CommandDeadline(settings, "reading the drift epochs", REDIS)
    epochs = deadline.run(load_epochs(settings, model, numbers))
    return [(drifted_model(model, epoch.centers), epoch.number) for epoch in epochs]


def _assign(args: argparse.Namespace) -> int:
    import pandas as pd

    from segstream.training.artifact import load_model
    from segstream.training.data import read_features
    from segstream.training.pipeline import write_parquet
    from segstream.training.prediction import assign_frame

    if args.epoch and not args.with_drift:
        raise ConfigError("--epoch needs --with-drift")
    out = _checked_file(args.out)
    model = load_model(_model_path(args))
    drifted = _drift_models(args, model) if args.with_drift else None
    started = time.perf_counter()
    features = read_features(_required_source(args))
    if drifted is None:
        frame = assign_frame(model, features)
        using = f"model {model.version}"
    else:
        frame = pd.concat(
            [assign_frame(m, features).assign(drift_epoch=number) for m, number in drifted],
            ignore_index=True,
        )
        using = f"model {model.version} at drift epoch " + ", ".join(
            str(number) for _, number in drifted
        )
    write_parquet(frame, out)
    counts = frame["segment"].value_counts().sort_index()
    elapsed = time.perf_counter() - started
    print(f"assigned {len(features):,} users with {using} in {elapsed:.1f}s")
    print(f"wrote {args.out}")
    per = "" if drifted is None or len(drifted) == 1 else " (rows of every epoch together)"
    print(f"segments{per}: " + ", ".join(f"{s}: {n:,}" for s, n in counts.items()))
    if frame["unseen"].any():
        print(f"{int(frame['unseen'].sum()):,} users had categories unseen in training (flagged)")
    return 0


PREDICT_OPTIONS = {
    "age": "age",
    "gender": "gender",
    "country": "country",
    "traffic_source": "traffic_source",
    "total_orders": "total_orders",
    "most_frequent_brand": "brand",
    "most_frequent_category": "category",
}
"""Each feature of ``segstream predict`` and the argparse destination of its option."""


def predict_row(args: argparse.Namespace) -> tuple[dict[str, object], int]:
    """``segstream predict``'s features and ``--top``, checked by the input table.

    Each option's text goes through :func:`segstream.training.inputs.parse_text`: the same
    rule, and the same message, as the stream's events and ``POST /predict``.

    Raises:
        InputError: a value its field's rule refuses (exit 2 with the table's message).
    """
    from segstream.training.inputs import parse_text

    row = {name: parse_text(name, getattr(args, dest)) for name, dest in PREDICT_OPTIONS.items()}
    return row, parse_text("top", args.top)


def _predict(args: argparse.Namespace) -> int:
    from segstream.training.artifact import load_model
    from segstream.training.prediction import predict_one, reference_users

    row, top = predict_row(args)
    model = load_model(_model_path(args))
    reference = reference_users(model, _model_path(args), _source(args)) if top else None
    result = predict_one(model, row, reference, top)
    if args.json:
        document = {
            "model_version": model.version,
            "segment": result.segment,
            "components": list(result.components),
            "distances": list(result.distances),
            "unseen_columns": list(result.unseen_columns),
            "fallbacks": {c: model.fallbacks[c] for c in result.unseen_columns},
            "similar_users": result.similar.to_dict(orient="records"),
        }
        print(json.dumps(document, default=lambda v: v.item()))
        return 0
    console = Console()
    console.print(f"[bold]segment {result.segment}[/bold]  (model {model.version})")
    console.print(f"components: {result.components[0]:.4f}, {result.components[1]:.4f}")
    distances = Table(title="distance to each segment centre (PCA space)")
    distances.add_column("segment", justify="right")
    distances.add_column("distance", justify="right")
    for s, d in enumerate(result.distances):
        distances.add_row(str(s), f"{d:.4f}" + (" <- nearest" if s == result.segment else ""))
    console.print(distances)
    for column in result.unseen_columns:
        console.print(
            f"[yellow]unseen in training:[/yellow] {escape(f'{column}={row[column]!r}')}, "
            f"encoded as its most frequent training value {escape(repr(model.fallbacks[column]))}"
        )
    if not result.similar.empty:
        similar = Table(
            title=f"{len(result.similar)} most similar users (nearest in PCA space, Euclidean)"
        )
        for column in ("user_id", "distance", "segment"):
            similar.add_column(column, justify="right")
        for user_id, distance, seg in result.similar.itertuples(index=False):
            similar.add_row(str(user_id), f"{distance:.6f}", str(seg))
        console.print(similar)
    return 0


def add_commands(sub: SubParsers) -> None:
    """Register generate, train, assign, predict and ``bench training``."""
    p = sub.add_parser(
        "generate", help="write thelook-shaped users/orders/order_items/products Parquet files"
    )
    p.add_argument("--out", metavar="DIR", help="directory to write the tables into (Parquet)")
    p.add_argument(
        "--db",
        metavar="URL",
        help="write the tables into this PostgreSQL database instead (postgresql://user:pw@"
        "host:port/db), in schema SEGSTREAM_CDC_SCHEMA, REPLICA IDENTITY FULL, with the "
        "publication SEGSTREAM_CDC_PUBLICATION (see docs/cdc.md)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="--db: drop the four tables first when they exist (otherwise refused)",
    )
    p.add_argument("--users", type=int, default=100_000, metavar="N", help="number of users")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed")
    p.add_argument(
        "--products", metavar="PATH", help="a real thelook products.parquet to use as the catalogue"
    )
    p.add_argument(
        "--catalogue-size",
        type=int,
        default=29_120,
        metavar="N",
        help="products in the generated catalogue (without --products)",
    )
    p.set_defaults(handler=_generate)

    p = sub.add_parser("train", help="fit scaler -> PCA -> k-means and publish MODELS/current")
    _add_source(p, required=True)
    p.add_argument(
        "--out",
        metavar="MODELS",
        default=str(load_settings().model_dir),
        help="models directory (default: SEGSTREAM_MODEL_DIR)",
    )
    p.add_argument(
        "--k",
        type=_k_value,
        default=None,
        metavar="auto|N",
        help="number of segments, 2..10, or auto (knee of the SSE curve; default)",
    )
    p.add_argument("--seed", type=int, default=42, metavar="S", help="random seed")
    alignment = p.add_mutually_exclusive_group()
    alignment.add_argument(
        "--previous",
        metavar="PATH",
        help="version to number the new segments after (default: MODELS/current if it exists)",
    )
    alignment.add_argument(
        "--no-align",
        action="store_true",
        help="keep k-means' own segment numbering (the report still compares with MODELS/current)",
    )
    p.set_defaults(handler=_train)

    p = sub.add_parser(
        "assign", help="assign every user of the data to a segment (batch reference)"
    )
    p.add_argument(
        "--model",
        help="model version directory or MODELS/current (default: SEGSTREAM_MODEL_DIR/current)",
    )
    _add_source(p, required=True)
    p.add_argument("--out", required=True, metavar="FILE.parquet", help="output Parquet file")
    p.add_argument(
        "--with-drift",
        action="store_true",
        help="assign with the drifted centres the workers share in Redis (SEGSTREAM_REDIS_URL, "
        "SEGSTREAM_APP_ID), as the stream did in SEGSTREAM_DRIFT=river; adds a drift_epoch "
        "column",
    )
    p.add_argument(
        "--epoch",
        type=int,
        action="append",
        metavar="E",
        help="with --with-drift: the drift epoch to assign with (a user's drift_epoch; "
        "0: the trained centres); repeat for several, one row per user and epoch "
        "(default: the newest epoch)",
    )
    p.set_defaults(handler=_assign)

    p = sub.add_parser("predict", help="segment and most similar users for one new customer")
    p.add_argument(
        "--model",
        help="model version directory or MODELS/current (default: SEGSTREAM_MODEL_DIR/current)",
    )
    p.add_argument("--age", required=True, metavar="YEARS", help="age in whole years, 0..120")
    p.add_argument("--gender", required=True, metavar="G", help="gender as in the data: F or M")
    p.add_argument("--country", required=True, help="country name as in the data, e.g. Brasil")
    p.add_argument(
        "--traffic-source",
        required=True,
        metavar="SOURCE",
        help="how the customer came, as in the data, e.g. Search, Organic, Facebook",
    )
    p.add_argument(
        "--total-orders", required=True, metavar="N", help="orders placed so far, 0..1,000,000"
    )
    p.add_argument("--brand", required=True, help="most frequent brand, e.g. 'Calvin Klein'")
    p.add_argument("--category", required=True, help="most frequent category, e.g. Jeans")
    p.add_argument(
        "--top", default="5", metavar="N", help="number of similar users, 0..50, 0 for none"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document, with the field names of the API's POST /predict",
    )
    _add_source(p, required=False)
    p.set_defaults(handler=_predict)
