"""``segstream services up | down | status | check``: the local Kafka and Redis, and with
``--cdc`` PostgreSQL and Kafka Connect with Debezium."""

from __future__ import annotations

import argparse
import time

from segstream.settings import load_settings, load_stack_settings

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the ``services`` verb and its three actions."""
    parser = sub.add_parser(
        "services",
        help="start, stop or inspect the local Kafka broker and Redis server",
        description="Run a single-node Apache Kafka (KRaft) and a Redis server on loopback. "
        "Ports and the data directory come from SEGSTREAM_KAFKA_PORT, SEGSTREAM_REDIS_PORT "
        "and SEGSTREAM_DATA_DIR.",
    )
    parser.add_argument(
        "action",
        choices=["up", "down", "status", "check"],
        help="up: start both (idempotent; waits until they answer); "
        "down: stop what up started and wait for it to exit; "
        "status: what runs (exit 0 when both do, 3 otherwise); "
        "check: a produce->consume and HSET->HGET round trip through the configured Kafka "
        "and Redis",
    )
    parser.add_argument(
        "--kafka-brokers",
        type=int,
        default=1,
        metavar="N",
        help="up: run a Kafka cluster of N (>= 3) KRaft brokers, ports SEGSTREAM_KAFKA_PORT "
        "and SEGSTREAM_KAFKA_CONTROLLER_PORT + 0, 2, 4, ... (default: one broker)",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="up: run a Redis Cluster of 3 primaries and 3 replicas on SEGSTREAM_REDIS_PORT "
        "+ 0..5 (bus ports 10000 higher) instead of one server",
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help="up: Kafka with a SASL_SSL listener (SCRAM-SHA-512) and Redis with TLS only and "
        "an ACL user, a throwaway CA in the data directory; prints the SEGSTREAM_ variables a "
        "client needs (eval them: passwords are read from files, never printed). "
        "check: use those settings",
    )
    parser.add_argument(
        "--cdc",
        action="store_true",
        help="up: also PostgreSQL (wal_level=logical, database shop, replication role "
        "segstream_cdc) on SEGSTREAM_POSTGRES_PORT and Kafka Connect (distributed) with the "
        "Debezium PostgreSQL connector on SEGSTREAM_CONNECT_PORT; prints the database URL for "
        "`segstream generate --db` (see docs/cdc.md)",
    )
    parser.add_argument(
        "--monitoring",
        action="store_true",
        help="up: also start Prometheus on SEGSTREAM_PROMETHEUS_PORT (9090) with segstream's "
        "alert and recording rules (deploy/prometheus/alerts.yml), scraping the workers listed "
        "in <data_dir>/prometheus/targets.json (first 127.0.0.1:SEGSTREAM_HTTP_PORT); `down` "
        "stops it too",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    # Here, not at the top: the stack's modules bring the clients (redis-py, aiokafka) and
    # the domain's NumPy, which parsing a command line must not pay for.
    from segstream.services.check import cdc_round_trip, round_trip
    from segstream.services.credentials import client_environment, password_file
    from segstream.services.prometheus import PrometheusServer
    from segstream.services.stack import Stack

    stack = Stack(load_settings(), load_stack_settings(), secure=args.secure)
    if args.action == "up":
        prometheus = PrometheusServer(stack.settings, stack.stack)
        if args.monitoring:
            prometheus.check_ports()  # before Kafka and Redis start, not after
        timings = stack.up(
            kafka_brokers=args.kafka_brokers, redis_cluster=args.redis_cluster, cdc=args.cdc
        )
        if args.monitoring:
            t0 = time.monotonic()
            timings["prometheus"] = time.monotonic() - t0 if prometheus.start() else None
        # Secured, the output is meant for `eval`: status lines are shell comments.
        mark = "# " if args.secure else ""
        for status in stack.status():
            took = timings.get(status.name)
            how = f"started in {took:.1f} s" if took is not None else "already running"
            if status.pid is None:
                continue  # a CDC service of an earlier `up --cdc`, not asked for this time
            print(f"{mark}{status.name:8} {status.address:28} pid {status.pid}  {how}")
        if args.cdc:
            secret = password_file(stack.settings, "postgres")
            port = stack.stack.postgres_port
            url = f"postgresql://segstream:$(cat {secret})@127.0.0.1:{port}/shop"
            print("the shop database, as its owner (the password is read from its file):")
            print(f'  export SHOP_DB="{url}"')
            print('  segstream generate --db "$SHOP_DB" --users 10000')
        if args.monitoring:
            print(f"{mark}alerts: {prometheus.url}/alerts  targets: {prometheus.targets_file}")
        if args.secure:
            print("# a client of this stack needs (passwords are read from their files):")
            for line in client_environment(stack.settings, stack.stack):
                print(line)
        return 0
    if args.action == "down":
        for name, stopped in stack.down().items():
            print(f"{name:8} {'stopped' if stopped else 'was not running'}")
        return 0
    if args.action == "check":
        trip = round_trip(stack.client if args.secure else stack.settings)
        print(f"kafka     produce -> consume round trip  {trip.kafka_ms:7.1f} ms")
        print(f"redis     HSET -> HGET round trip        {trip.redis_ms:7.1f} ms")
        if stack.cdc_used():
            cdc = cdc_round_trip(stack.postgres.superuser_url(), stack.connect.url)
            print(f"postgres  SELECT 1                       {cdc.postgres_ms:7.1f} ms")
            print(f"connect   GET /connectors                {cdc.connect_ms:7.1f} ms")
        return 0
    running = 0
    for status in stack.status():
        state = f"running (pid {status.pid})" if status.pid else "stopped"
        running += status.pid is not None
        print(f"{status.name:8} {status.address:28} {state}  {status.detail}".rstrip())
    # Exit status like `systemctl is-active`: 0 only when everything runs.
    return 0 if running == len(stack.status()) else 3
