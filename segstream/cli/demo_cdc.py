"""``segstream demo --cdc``: the change-data-capture story end to end, then a clean stop.

Kafka, Redis, PostgreSQL and Kafka Connect with Debezium up -> ``generate --db`` a shop
database -> ``train --db`` over it -> ``cdc connector --register`` (Debezium snapshots the
tables) -> ``cdc check`` -> a worker with ``SEGSTREAM_SOURCE=cdc`` -> ``shop``'s live mutations
while the live panel shows events, lag, populations and changes -> ``assign --db`` over the
database's current rows, and every user's streamed segment compared with it.

Like the JSON demo it works in a namespace of its own: database, topic prefix, publication,
slot and connector ``segstream_demo``, app id ``segstream-demo-cdc``, topics ``demo-cdc.*``;
each run removes the previous run's first. Whatever services it started, it stops (also on
Ctrl-C); the demo's database and connector are left for a look (``segstream shop --db``
can go on mutating it) and removed by the next run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from segstream.cli.demo import (
    _epoch_arguments,
    _report_parity,
    _run,
    _start,
    _start_worker,
    _step,
    _stop,
    _watch,
)
from segstream.services.stack import Stack
from segstream.settings import Settings, as_environment, load_settings, load_stack_settings

__all__ = ["DEMO_PREFIX", "run_cdc_demo"]

DEMO_PREFIX = "segstream_demo_"
"""Each run's database (and topic prefix, publication, slot, connector) is this and the run's
start time. A new name per run: Kafka Connect keeps a connector's offsets under its name, and
a connector registered again under an old name would resume there instead of snapshotting."""


def _demo_settings(settings: Settings, stack: Stack, models: Path, database: str) -> Settings:
    """The CDC demo's namespace on the local stack."""
    from segstream.services.scratch import scratch_settings

    client = stack.client
    demo = load_settings(
        **{
            **settings.model_dump(),
            "kafka_bootstrap_servers": client.kafka_bootstrap_servers,
            "redis_url": client.redis_url,
            "connect_url": stack.connect.url,
            "model_dir": models,
            "source": "cdc",
            "app_id": "segstream-demo-cdc",
            "topic_users": "demo-cdc.users",
            "topic_orders": "demo-cdc.orders",
            "topic_segment_changes": "demo-cdc.segment-changes",
            "topic_user_segments": "demo-cdc.user-segments",
            "topic_dead_letters": "demo-cdc.dead-letters",
            "topic_rederive": "demo-cdc.rederive",
        }
    )
    return scratch_settings(demo, stack.stack, database)


def run_cdc_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Run the CDC demo; 0 when every user's streamed segment equals the batch's over the
    database's current rows."""
    from segstream.cdc.connector import table_topics
    from segstream.services.scratch import (
        create_scratch,
        drop_scratch,
        registered,
        scratch_settings,
    )
    from segstream.stream.lifecycle.namespace import drop_namespace

    work = settings.data_dir.resolve() / "demo-cdc"
    models = work / "models"
    stack = Stack(settings, load_stack_settings())
    worker: subprocess.Popen[bytes] | None = None
    shop: subprocess.Popen[bytes] | None = None
    started: dict[str, float | None] = {}
    try:
        t0 = _step("starting Kafka, Redis, PostgreSQL and Kafka Connect with Debezium")
        started = stack.up(cdc=True)
        for status in stack.status():
            print(f"   {status.name:8} {status.address}")
        database = f"{DEMO_PREFIX}{int(time.time())}"
        demo = _demo_settings(settings, stack, models, database)
        env = as_environment(demo, os.environ)
        old_topics: list[str] = []
        for old in registered(demo, DEMO_PREFIX):  # the previous runs' capture and topics
            drop_scratch(demo, stack.stack, old)
            old_topics += table_topics(scratch_settings(demo, stack.stack, old)).values()
        drop_namespace(demo, [demo.app_id], old_topics)
        time.sleep(1.0)  # topic deletion completes asynchronously on the broker
        print(f"   ready in {time.perf_counter() - t0:.1f} s")

        url = create_scratch(demo, stack.stack, database)
        _step(f"generating a shop of {args.users:,} users into PostgreSQL database {database}")
        _run(env, "generate", "--db", url, "--users", str(args.users))

        _step("training over the database: features SQL -> scale -> PCA -> k-means")
        _run(env, "train", "--db", url, "--out", str(models), "--no-align")

        _step("registering the Debezium connector: it snapshots the four tables into Kafka")
        _run(env, "cdc", "connector", "--register", "--wait", "180")
        _run(env, "cdc", "check")

        _step("starting the streaming worker on the change events (SEGSTREAM_SOURCE=cdc)")
        worker = _start_worker(env, work, demo)

        _step(
            f"live shop mutations for {args.shop_seconds:.0f} s at {args.shop_rate:.0f}/s: new "
            "users and orders, lines added and deleted, orders moved, profiles edited, users "
            "deleted, products corrected"
        )
        shop_args = ["shop", "--db", url, "--rate", str(args.shop_rate),
                     "--duration", str(args.shop_seconds)]  # fmt: skip
        shop = _start(env, work / "shop.log", *shop_args)
        print(f"   shop pid {shop.pid}, each change in {work / 'shop.log'}")
        _watch(demo, shop, worker, work / "worker.log")
        print("   " + (work / "shop.log").read_text(errors="replace").strip().splitlines()[-1])

        assigned = work / "assigned.parquet"
        assign = ["assign", "--model", str(models / "current"), "--db", url,
                  "--out", str(assigned)]  # fmt: skip
        if demo.drift == "off":
            _step(
                "batch vs stream: does every user's streamed segment equal `segstream assign "
                "--db` over the database's current rows?"
            )
        else:
            _step(
                "batch vs stream: does every user's streamed segment equal `segstream assign "
                "--db --with-drift --epoch E`, E the drift epoch stored with them?"
            )
            assign += ["--with-drift", *_epoch_arguments(demo)]
        _run(env, *assign)
        return _report_parity(demo, assigned)
    finally:
        _step("stopping everything the demo started")
        _stop(shop, "shop")
        _stop(worker, "worker")
        for service in (stack.connect, stack.postgres, stack.kafka, stack.redis):
            if started.get(service.name) is not None:
                service.stop()
        print("   done", flush=True)
