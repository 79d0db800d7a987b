"""``segstream bench training | stream | cdc | ops | populations | drift``: benchmarks, figures.

The benchmarks live in ``benchmarks/`` of a source checkout, not in the installed package; these
verbs run them from the checkout the package was installed from (``pip install -e .``, as
``make setup`` does). ``make bench`` runs the training and streaming ones.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import TypeAlias

from rich.console import Console

from segstream.cli.main import add_verbs
from segstream.errors import ConfigError
from segstream.settings import load_settings

__all__ = ["add_commands"]

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def benchmark(name: str) -> ModuleType:
    """The module ``benchmarks.<name>`` of the checkout segstream runs from.

    Raises:
        ConfigError: segstream was installed without its source checkout.
    """
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "benchmarks" / "__init__.py").is_file():
        raise ConfigError(
            "the benchmarks ship with the source, not the installed package: run them from a "
            "checkout (git clone, then make bench)"
        )
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    return importlib.import_module(f"benchmarks.{name}")


def _bench_training(args: argparse.Namespace) -> int:
    training = benchmark("training")
    figures = training.run_bench(
        users=args.users,
        big_users=0 if args.skip_big else args.big_users,
        products=Path(args.products) if args.products else None,
        workdir=Path(args.workdir) if args.workdir else None,
        seed=args.seed,
    )
    training.print_figures(figures, Console())
    return 0


def _bench_stream(args: argparse.Namespace) -> int:
    if args.processes is not None:
        return int(benchmark("processes").run_processes_bench(load_settings(), args))
    if args.profile is not None:
        # Checked before the run: the profile is written minutes into it.
        target = Path(args.profile)
        if target.is_dir() or not target.resolve().parent.is_dir():
            raise ConfigError(
                f"--profile {args.profile}: not a file in an existing directory; name the file "
                "to write the statistics to, e.g. --profile /tmp/worker-profile.pstats"
            )
    code: int = benchmark("stream").run_stream_bench(load_settings(), args)
    return code


def _bench_cdc(args: argparse.Namespace) -> int:
    if args.users < 10 or args.rate <= 0 or args.seconds <= 0 or args.json_users < 0:
        raise ConfigError(
            "--users must be at least 10, --rate and --seconds positive, --json-users not "
            "negative (0 skips the JSON path)"
        )
    code: int = benchmark("cdc").run_cdc_bench(load_settings(), args)
    return code


def _bench_ops(args: argparse.Namespace) -> int:
    if args.users < 1 or args.requests < 4:
        raise ConfigError("--users must be at least 1 and --requests at least 4")
    code: int = benchmark("ops").run_ops_bench(load_settings(), args.users, args.requests)
    return code


def _bench_drift(args: argparse.Namespace) -> int:
    if args.users < 1 or args.epochs < 1 or args.repeat < 1:
        raise ConfigError("--users, --epochs and --repeat must be at least 1")
    code: int = benchmark("drift").run_drift_bench(
        load_settings(), args.users, args.epochs, args.repeat
    )
    return code


def _bench_deliver(args: argparse.Namespace) -> int:
    if args.changes < 1 or args.rate <= 0:
        raise ConfigError("--changes must be at least 1 and --rate positive")
    code: int = benchmark("delivery").run_delivery_bench(load_settings(), args.changes, args.rate)
    return code


def _bench_populations(args: argparse.Namespace) -> int:
    if args.users < 10 or args.reads < 1 or args.scan_runs < 1:
        raise ConfigError("--users must be at least 10, --reads and --scan-runs at least 1")
    code: int = benchmark("populations").run_populations_bench(
        load_settings(), args.users, args.reads, args.scan_runs
    )
    return code


def _bench_correction(args: argparse.Namespace) -> int:
    bench = benchmark("correction")
    return int(
        bench.run_correction_bench(
            load_settings(), args.users, args.lines, args.products, args.batch
        )
    )


def add_commands(sub: SubParsers) -> None:
    """Register ``bench training``, ``stream``, ``ops``, ``populations``, ``drift`` and
    ``correction``."""
    bench = sub.add_parser("bench", help="benchmarks that print their figures")
    targets = add_verbs(bench, "bench_target", "TARGET")
    p = targets.add_parser(
        "training", help="generate+train at 100k, SQL+train at 1M, assignment rate"
    )
    p.add_argument("--users", type=int, default=100_000, metavar="N", help="users of the small run")
    p.add_argument(
        "--big-users", type=int, default=1_000_000, metavar="N", help="users of the large run"
    )
    p.add_argument("--skip-big", action="store_true", help="skip the large run")
    p.add_argument("--products", metavar="PATH", help="a real thelook products.parquet")
    p.add_argument(
        "--workdir",
        metavar="DIR",
        help="where to write data and models (default: a temporary directory)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed of the data")
    p.set_defaults(handler=_bench_training)
    p = targets.add_parser(
        "stream",
        help="worker throughput and latency, Redis memory per user, start-to-first-event",
    )
    p.add_argument(
        "--events",
        type=int,
        default=200_000,
        metavar="N",
        help="order events of the throughput run",
    )
    p.add_argument(
        "--users", type=int, default=100_000, metavar="N", help="users of the memory run"
    )
    p.add_argument(
        "--rate", type=float, default=2_000.0, metavar="N", help="events/s of the latency run"
    )
    p.add_argument(
        "--latency-seconds",
        type=float,
        default=20.0,
        metavar="S",
        help="length of the latency run, in seconds",
    )
    p.add_argument(
        "--workdir",
        metavar="DIR",
        help="where to keep data and models (default: a temporary directory)",
    )
    p.add_argument(
        "--profile",
        nargs="?",
        const="worker-profile.pstats",
        metavar="PATH",
        help="also run the worker under cProfile on one more wave of orders, write its "
        "statistics to PATH (default: worker-profile.pstats) and print where the time went",
    )
    p.add_argument(
        "--processes",
        metavar="LIST",
        help="instead of the figures above: `segstream worker --processes N` for each N of "
        "LIST (comma-separated counts, `all` for the usable cores, e.g. 1,2,all): events/s "
        "over the same backlog (--users users, their orders twice) and latency p50/p99 at "
        "--rate for --latency-seconds",
    )
    p.set_defaults(handler=_bench_stream)
    p = targets.add_parser(
        "cdc",
        help="change data capture: snapshot time, change rows/s through the worker, commit -> "
        "segment change p50/p99, beside the JSON path's figures",
    )
    p.add_argument(
        "--users", type=int, default=100_000, metavar="N", help="users of the snapshotted database"
    )
    p.add_argument(
        "--rate",
        type=float,
        default=50.0,
        metavar="N",
        help="shop transactions/s (and JSON order events/s) of the latency runs",
    )
    p.add_argument(
        "--seconds", type=float, default=30.0, metavar="S", help="length of the latency runs"
    )
    p.add_argument(
        "--json-users",
        type=int,
        default=20_000,
        metavar="N",
        help="users of the JSON path's run (0: skip it)",
    )
    p.add_argument(
        "--workdir",
        metavar="DIR",
        help="where to keep data and models (default: a temporary directory)",
    )
    p.set_defaults(handler=_bench_cdc)
    p = targets.add_parser(
        "ops", help="population count, lag read and HTTP API latencies on the configured stack"
    )
    p.add_argument(
        "--users", type=int, default=100_000, metavar="N", help="synthetic users to count"
    )
    p.add_argument(
        "--requests", type=int, default=2_000, metavar="N", help="GET /users requests to time"
    )
    p.set_defaults(handler=_bench_ops)
    p = targets.add_parser(
        "deliver",
        help="webhook delivery: changes/s to one fast destination, published -> acknowledged "
        "p50/p99, on the configured stack",
    )
    p.add_argument("--changes", type=int, default=20_000, metavar="N", help="change events per run")
    p.add_argument(
        "--rate", type=float, default=2_000, metavar="N", help="changes/s of the latency run"
    )
    p.set_defaults(handler=_bench_deliver)
    p = targets.add_parser(
        "populations",
        help="population read from the maintained counters vs a SCAN count, on the configured "
        "Redis (or Redis Cluster)",
    )
    p.add_argument(
        "--users", type=int, default=1_000_000, metavar="N", help="synthetic users to write"
    )
    p.add_argument("--reads", type=int, default=50, metavar="N", help="counter reads to time")
    p.add_argument(
        "--scan-runs", type=int, default=1, metavar="N", help="SCAN counts to time (best kept)"
    )
    p.set_defaults(handler=_bench_populations)
    p = targets.add_parser(
        "drift", help="what drift epochs cost in Redis (settle rows, epoch updates, memory)"
    )
    p.add_argument(
        "--users", type=int, default=2_000, metavar="N", help="settle rows of a call (a batch)"
    )
    p.add_argument(
        "--epochs", type=int, default=3_600, metavar="N", help="drift epochs kept in the hash"
    )
    p.add_argument("--repeat", type=int, default=15, metavar="N", help="calls timed per figure")
    p.set_defaults(handler=_bench_drift)
    p = targets.add_parser(
        "correction",
        help="what one product correction costs with SEGSTREAM_SOURCE=cdc (fan-out to its "
        "buyers, their re-derivation), on the configured Redis",
    )
    p.add_argument("--users", type=int, default=100_000, metavar="N", help="users to write")
    p.add_argument("--lines", type=int, default=3, metavar="N", help="order lines per user")
    p.add_argument("--products", type=int, default=1_000, metavar="N", help="catalogue size")
    p.add_argument("--batch", type=int, default=2_000, metavar="N", help="users per apply call")
    p.set_defaults(handler=_bench_correction)
