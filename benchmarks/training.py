"""``segstream bench training``: the offline half's speed and memory, measured and printed.

Three figures, against the targets of issue 3 (2-core machine):

1. generate + train (elbow k=2..10, n_init=10, report included) at 100,000 users: < 60 s;
2. feature SQL + train at 1,000,000 users: < 5 min, peak RSS < 4 GB. This step runs in a
   child process (``python -m benchmarks.training``) so that its peak RSS is its own,
   not the parent's, which has just generated the data;
3. vectorised assignment (encode -> scale -> project -> nearest) over 1,000,000 feature rows
   as read from the data: >= 1,000,000 rows/s (best of 3 runs).

Beside them, what numbering a retrained model after the previous version costs (centre
matching plus the previous model's assignment of every training user for the report's
transitions), on the small run's training users (best of 3; no target, part of train).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from segstream.errors import SegstreamError
from segstream.training.artifact import load_model
from segstream.training.assign import assign
from segstream.training.data import DataSource, read_features
from segstream.training.generate import generate_tables, load_catalogue, write_tables
from segstream.training.pipeline import PreviousVersion, follow_previous, train_to_directory
from segstream.training.train import TrainConfig, TrainResult

__all__ = ["BenchFigures", "print_figures", "run_bench"]

_ASSIGN_ROWS = 1_000_000
_REPEATS = 3


@dataclass(frozen=True)
class BenchFigures:
    """Measured figures; the big-run fields are None when it was skipped."""

    users: int
    generate_s: float
    train_s: float
    k: int
    big_users: int | None
    big_generate_s: float | None
    big_sql_s: float | None
    big_train_s: float | None
    big_peak_rss_mb: float | None
    assign_rows: int
    assign_rows_per_s: float
    align_users: int
    align_s: float


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _sql_and_train(data: Path, models: Path, seed: int) -> dict[str, float]:
    """The measured child step: feature SQL then training (elbow and report included)."""
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def progress(step: str, done: int, total: int) -> None:
        if step == "reading features" and done == total:
            timings["sql_s"] = time.perf_counter() - started

    train_to_directory(DataSource(path=data), models, TrainConfig(seed=seed), progress)
    timings["total_s"] = time.perf_counter() - started
    timings["train_s"] = timings["total_s"] - timings["sql_s"]
    timings["peak_rss_mb"] = _peak_rss_mb()
    return timings


def _time_assign(model_dir: Path, features: pd.DataFrame) -> float:
    """Best-of-3 assignment rate over ``features``, rows per second."""
    model = load_model(model_dir)
    assign(model, features.head(1000))  # warm the vocabulary indexes
    best = float("inf")
    for _ in range(_REPEATS):
        started = time.perf_counter()
        assign(model, features)
        best = min(best, time.perf_counter() - started)
    return len(features) / best


def _time_alignment(result: TrainResult) -> float:
    """Best-of-3 seconds of :func:`follow_previous` against the model itself as previous."""
    model = result.model
    previous = PreviousVersion(model.version, model)
    best = float("inf")
    for _ in range(_REPEATS):
        started = time.perf_counter()
        follow_previous(result, previous)
        best = min(best, time.perf_counter() - started)
    return best


def run_bench(
    users: int = 100_000,
    big_users: int = 1_000_000,
    products: Path | None = None,
    workdir: Path | None = None,
    seed: int = 0,
) -> BenchFigures:
    """Run the benchmark (``big_users=0`` skips the large run) and return its figures.

    Raises:
        SegstreamError: a step failed (the child's error output is included).
    """
    with tempfile.TemporaryDirectory(prefix="segstream-bench-") as tmp:
        root = workdir or Path(tmp)
        catalogue = load_catalogue(products) if products else None
        console = Console(stderr=True)

        console.print(f"bench: generate + train at {users:,} users")
        started = time.perf_counter()
        write_tables(generate_tables(users, seed, catalogue), root / "small")
        generate_s = time.perf_counter() - started
        started = time.perf_counter()
        outcome = train_to_directory(
            DataSource(path=root / "small"), root / "models-small", TrainConfig(seed=seed)
        )
        train_s = time.perf_counter() - started
        align_s = _time_alignment(outcome.result)

        big: dict[str, float] = {}
        big_generate_s = None
        if big_users:
            console.print(f"bench: generate {big_users:,} users, then SQL + train in a child")
            started = time.perf_counter()
            write_tables(generate_tables(big_users, seed + 1, catalogue), root / "big")
            big_generate_s = time.perf_counter() - started
            big = _run_child(root / "big", root / "models-big", seed)
            rows = read_features(DataSource(path=root / "big"))
        else:
            rows = read_features(DataSource(path=root / "small"))
        # Assignment is timed on 1,000,000 real feature rows (repeated when the data is smaller).
        repeats = -(-_ASSIGN_ROWS // len(rows))
        rows = pd.concat([rows] * repeats, ignore_index=True).head(_ASSIGN_ROWS)
        console.print(f"bench: assignment over {len(rows):,} rows")
        rate = _time_assign(outcome.version_dir, rows)
        return BenchFigures(
            users=users,
            generate_s=generate_s,
            train_s=train_s,
            k=outcome.result.model.k,
            big_users=big_users or None,
            big_generate_s=big_generate_s,
            big_sql_s=big.get("sql_s"),
            big_train_s=big.get("train_s"),
            big_peak_rss_mb=big.get("peak_rss_mb"),
            assign_rows=len(rows),
            assign_rows_per_s=rate,
            align_users=outcome.result.model.n_rows,
            align_s=align_s,
        )


def _run_child(data: Path, models: Path, seed: int) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.training", str(data), str(models), str(seed)]
    checkout = Path(__file__).resolve().parents[1]  # `-m benchmarks.…` needs it on the path
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=checkout)
    if done.returncode != 0:
        raise SegstreamError(f"the 1M-user bench step failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _verdict(ok: bool) -> str:
    return "[green]meets target[/green]" if ok else "[red]misses target[/red]"


def print_figures(f: BenchFigures, console: Console) -> None:
    """Print the figures as a table, each beside its target."""
    table = Table(title="segstream bench training")
    for column in ("measure", "figure", "target", ""):
        table.add_column(column)
    total = f.generate_s + f.train_s
    table.add_row(f"generate {f.users:,} users", f"{f.generate_s:.1f} s", "", "")
    table.add_row(f"train {f.users:,} users (elbow 2..10, k={f.k})", f"{f.train_s:.1f} s", "", "")
    table.add_row("generate + train", f"{total:.1f} s", "< 60 s", _verdict(total < 60))
    if f.big_users:
        big_total = (f.big_sql_s or 0) + (f.big_train_s or 0)
        rss = f.big_peak_rss_mb or 0
        table.add_row(
            f"generate {f.big_users:,} users (outside the target)",
            f"{f.big_generate_s:.1f} s",
            "",
            "",
        )
        table.add_row(f"feature SQL, {f.big_users:,} users", f"{f.big_sql_s:.1f} s", "", "")
        table.add_row(f"train, {f.big_users:,} users", f"{f.big_train_s:.1f} s", "", "")
        table.add_row(
            "feature SQL + train", f"{big_total:.1f} s", "< 300 s", _verdict(big_total < 300)
        )
        table.add_row(
            "peak RSS of SQL + train", f"{rss:,.0f} MiB", "< 4096 MiB", _verdict(rss < 4096)
        )
    rate = f.assign_rows_per_s
    table.add_row(
        f"assignment, {f.assign_rows:,} rows",
        f"{rate:,.0f} rows/s",
        ">= 1,000,000 rows/s",
        _verdict(rate >= 1e6),
    )
    table.add_row(
        f"segment-id alignment + users moved, {f.align_users:,} users (part of train)",
        f"{f.align_s * 1000:.0f} ms",
        "",
        "",
    )
    console.print(table)


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training")
    parser.add_argument("data", type=Path)
    parser.add_argument("models", type=Path)
    parser.add_argument("seed", type=int)
    args = parser.parse_args(argv)
    print(json.dumps(_sql_and_train(args.data, args.models, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
