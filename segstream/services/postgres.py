"""The machine's PostgreSQL (Debian package ``postgresql``), run as a private cluster on loopback.

The cluster lives in ``<data_dir>/postgres/data``, initialised once with ``initdb`` and run by
the ``postgres`` binary itself (no ``pg_ctl``, no system service), so the pid file and the
stop are the same as for Kafka and Redis. PostgreSQL refuses to run as root: as root, the
cluster's folder belongs to the ``postgres`` user and the server runs as that user through
``setpriv`` (which execs, so the pid we keep is the server's own).

The cluster is set up for change data capture: ``wal_level = logical``, a superuser
``segstream`` that owns the ``shop`` database, and a replication role ``segstream_cdc`` that
is NOT a superuser: it may log in, stream the WAL (REPLICATION) and SELECT the schema's tables
(for the connector's snapshot), nothing else. Both passwords are generated once into
``<data_dir>/secrets/postgres-password`` and ``postgres-cdc-password``; connections from
127.0.0.1 authenticate with SCRAM-SHA-256, and there is no Unix socket.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

from segstream.errors import ServiceError
from segstream.services.credentials import password
from segstream.services.process import LocalServer
from segstream.settings import Settings

__all__ = [
    "CDC_ROLE",
    "DATABASE",
    "SUPERUSER",
    "PostgresServer",
    "grant_statements",
    "postgres_bin_dir",
]

SUPERUSER = "segstream"
"""The cluster's superuser, owner of the ``shop`` database and of the tables in it."""
CDC_ROLE = "segstream_cdc"
"""The connector's role: LOGIN and REPLICATION, SELECT on the schema's tables, no superuser."""
DATABASE = "shop"
"""The database ``generate --db`` and ``shop`` write and Debezium captures."""

_OWNER = "postgres"
"""The system user the server runs as when segstream runs as root."""

_HBA = """\
# segstream's private cluster: loopback only, passwords (SCRAM) for every role.
host    all             all             127.0.0.1/32            scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
"""


def postgres_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` on this machine.

    Raises:
        ServiceError: PostgreSQL is not installed.
    """
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not found:
        raise ServiceError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres): "
            "apt-get install postgresql"
        )
    return Path(found[-1]).parent


class PostgresServer(LocalServer):
    """The local PostgreSQL described by ``settings``: initdb once, start, wait, roles, stop."""

    name = "postgres"
    config_name = "postgresql.conf"
    log_name = "postgres.log"
    port_settings = "another port with SEGSTREAM_POSTGRES_PORT"
    start_timeout_s = 60.0
    stop_timeout_s = 30.0
    # SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client to leave (a
    # replication connection never does); SIGINT is its "fast" one: roll back, then exit.
    stop_signal = signal.SIGINT

    def ports(self) -> tuple[int, ...]:
        """The one client port."""
        return (self.stack.postgres_port,)

    @property
    def data(self) -> Path:
        """The cluster's data directory (``PGDATA``)."""
        return self.home / "data"

    def url(self, *, user: str = SUPERUSER, driver: str = "") -> str:
        """The database URL without a password: ``postgresql://user@127.0.0.1:port/shop``.

        ``driver`` is appended to the scheme for SQLAlchemy (``"+psycopg"``).
        """
        return f"postgresql{driver}://{user}@127.0.0.1:{self.stack.postgres_port}/{DATABASE}"

    def superuser_url(self) -> str:
        """The superuser's SQLAlchemy URL with its password (for ``generate --db``, tests)."""
        secret = password(self.settings, "postgres")
        port = self.stack.postgres_port
        return f"postgresql+psycopg://{SUPERUSER}:{secret}@127.0.0.1:{port}/{DATABASE}"

    def cdc_settings(self) -> Settings:
        """``settings`` with ``cdc_database_url`` naming this server's replication role."""
        return self.settings.model_copy(update={"cdc_database_url": self.url(user=CDC_ROLE)})

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["setpriv", f"--reuid={_OWNER}", f"--regid={_OWNER}", "--init-groups", *argv]

    def _check_reachable(self) -> None:
        """As root, the ``postgres`` user must be able to enter every folder above ``home``."""
        if os.geteuid() != 0:
            return
        try:
            owner = pwd.getpwnam(_OWNER)
        except KeyError as exc:
            raise ServiceError(
                f"PostgreSQL will not run as root and there is no {_OWNER!r} user to run it "
                "as: apt-get install postgresql creates it"
            ) from exc
        for folder in [*reversed(self.home.parents)]:
            mode = folder.stat()
            if folder.stat().st_uid == owner.pw_uid:
                continue
            if not mode.st_mode & stat.S_IXOTH:
                raise ServiceError(
                    f"PostgreSQL runs as the {_OWNER!r} user (it refuses root), who cannot "
                    f"enter {folder}: choose SEGSTREAM_DATA_DIR under a folder others may "
                    f"enter, or chmod o+x {folder}"
                )

    def _initdb(self, bin_dir: Path) -> None:
        """Create the cluster once, its superuser's password from the secrets folder."""
        if (self.data / "PG_VERSION").exists():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        pwfile = self.home / "initdb-password"
        pwfile.write_text(password(self.settings, "postgres") + "\n")
        os.chmod(pwfile, 0o600)
        if os.geteuid() == 0:
            shutil.chown(self.home, _OWNER, _OWNER)
            shutil.chown(pwfile, _OWNER, _OWNER)
        try:
            result = subprocess.run(
                self._as_owner(
                    [
                        str(bin_dir / "initdb"),
                        "-D",
                        str(self.data),
                        "-U",
                        SUPERUSER,
                        f"--pwfile={pwfile}",
                        "-A",
                        "scram-sha-256",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ]
                ),
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(self.data, ignore_errors=True)
            raise ServiceError(f"initdb failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")

    def _write_config(self) -> None:
        lines = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.stack.postgres_port),
            # No Unix socket: /var/run/postgresql belongs to the system's cluster.
            "unix_socket_directories": "''",
            "hba_file": f"'{self.home / 'pg_hba.conf'}'",
            "data_directory": f"'{self.data}'",
            # Debezium's pgoutput plugin reads the WAL through a logical replication slot.
            "wal_level": "logical",
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            "password_encryption": "scram-sha-256",
            "shared_buffers": "64MB",
            "logging_collector": "off",
        }
        self.config_file.write_text("".join(f"{k} = {v}\n" for k, v in lines.items()))
        (self.home / "pg_hba.conf").write_text(_HBA)
        if os.geteuid() == 0:
            for path in (self.config_file, self.home / "pg_hba.conf"):
                shutil.chown(path, _OWNER, _OWNER)

    def _launch(self) -> None:
        """Find PostgreSQL, initdb once, write the config and start the server.

        Raises:
            ServiceError: PostgreSQL is missing, its folder is unreachable, or initdb failed.
        """
        bin_dir = postgres_bin_dir()
        self.home.mkdir(parents=True, exist_ok=True)
        self._check_reachable()
        self._initdb(bin_dir)
        self._write_config()
        self.process.start(
            self._as_owner(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(self.data),
                    "-c",
                    f"config_file={self.config_file}",
                ]
            )
        )

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the superuser can run a query, then create the database and roles."""
        import psycopg

        deadline = time.monotonic() + timeout_s
        secret = password(self.settings, "postgres")
        while True:
            try:
                with psycopg.connect(
                    host="127.0.0.1",
                    port=self.stack.postgres_port,
                    user=SUPERUSER,
                    password=secret,
                    dbname="postgres",
                    connect_timeout=2,
                    autocommit=True,
                ) as conn:
                    conn.execute("SELECT 1")
                    self._bootstrap(conn)
                    return
            except psycopg.OperationalError as exc:
                if not self.process.is_running():
                    raise ServiceError(
                        f"PostgreSQL exited during start-up; its log ends:\n"
                        f"{self.process.log_tail()}"
                    ) from exc
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"PostgreSQL on 127.0.0.1:{self.stack.postgres_port} did not accept "
                        f"connections within {timeout_s:.0f} s ({exc}); its log ends:\n"
                        f"{self.process.log_tail()}"
                    ) from exc
                time.sleep(0.1)

    def _bootstrap(self, conn: object) -> None:
        """Idempotently create the ``shop`` database and the replication role with its grants."""
        import psycopg
        from psycopg import sql

        assert isinstance(conn, psycopg.Connection)
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        if found.fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        secret = password(self.settings, "postgres-cdc")
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (CDC_ROLE,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL("{} ROLE {} WITH LOGIN REPLICATION NOSUPERUSER PASSWORD {}").format(
                sql.SQL(verb), sql.Identifier(CDC_ROLE), sql.Literal(secret)
            )
        )
        server, shop = grant_statements(self.settings.cdc_schema)
        for statement in server:
            conn.execute(statement)
        with psycopg.connect(
            host="127.0.0.1",
            port=self.stack.postgres_port,
            user=SUPERUSER,
            password=password(self.settings, "postgres"),
            dbname=DATABASE,
            autocommit=True,
        ) as database:
            for statement in shop:
                database.execute(statement)


def grant_statements(schema: str) -> tuple[list[str], list[str]]:
    """What the replication role is given: statements run in any database of the server, and
    statements run in the ``shop`` database (docker-compose's init script runs the same; a
    unit test compares them)."""
    role, owner, database = f'"{CDC_ROLE}"', f'"{SUPERUSER}"', f'"{DATABASE}"'
    quoted = '"' + schema.replace('"', '""') + '"'
    server = [f"GRANT CONNECT ON DATABASE {database} TO {role}"]
    shop = [
        f"CREATE SCHEMA IF NOT EXISTS {quoted}",
        f"GRANT USAGE ON SCHEMA {quoted} TO {role}",
        # The snapshot SELECTs every captured table: today's and those created later.
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {quoted} TO {role}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {quoted} "
        f"GRANT SELECT ON TABLES TO {role}",
    ]
    return server, shop
