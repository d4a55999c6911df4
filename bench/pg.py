"""The PostgreSQL data set and the peer tools (pg_basebackup | zstd, pgBackRest)."""

from __future__ import annotations

import json
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.common import WORK, free_port, log, private_dir, run, tree_size

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
STANZA = "bench"


@dataclass
class PgCluster:
    root: Path
    port: int
    password: str

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_file(self) -> Path:
        return self.root / "postgresql.log"

    @property
    def pgbr_conf(self) -> Path:
        return self.root / "pgbackrest.conf"

    @property
    def pgbr_repo(self) -> Path:
        return self.root / "pgbackrest-repo"

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.run_dir} port={self.port} user=postgres dbname={dbname}"

    def sql(self, query: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        with psycopg.connect(self.conninfo(dbname), autocommit=True) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else []

    def connection_params(self) -> dict[str, object]:
        """What Strongroom's ``register_external`` is given (TCP, SCRAM password)."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": "postgres",
            "password": self.password,
            "database": "postgres",
            # On this host: Strongroom reads the files (page-level incrementals).
            "data_dir": str(self.data),
        }

    # -- server -----------------------------------------------------------------------
    def start(self) -> None:
        run(
            [PG_BIN / "pg_ctl", "start", "-D", self.data, "-l", self.log_file, "-w", "-t", "300"],
            user=OS_USER,
        )

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            run([PG_BIN / "pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w"], user=OS_USER)

    def pgbackrest(self, *args: str, timeout: float = 7200) -> str:
        return run(
            ["pgbackrest", f"--config={self.pgbr_conf}", f"--stanza={STANZA}", *args],
            user=OS_USER,
            timeout=timeout,
        ).stdout

    def pgbackrest_argv(self, *args: str) -> list[str]:
        return [
            "runuser",
            "-u",
            OS_USER,
            "--",
            "pgbackrest",
            f"--config={self.pgbr_conf}",
            f"--stanza={STANZA}",
            *args,
        ]


def setup(scale: int, name: str = "pg") -> PgCluster:
    """initdb a cluster on a free port under WORK/pg, load pgbench at ``scale`` with a
    realistic ``filler`` (md5 text), and prepare a pgBackRest stanza for it."""
    root = WORK / name
    old = root / "data" / "postmaster.pid"
    if old.exists():
        run(
            [PG_BIN / "pg_ctl", "stop", "-D", root / "data", "-m", "immediate"],
            user=OS_USER,
            check=False,
        )
    shutil.rmtree(root, ignore_errors=True)
    private_dir(root, OS_USER, 0o711)
    cluster = PgCluster(root, free_port(), secrets.token_urlsafe(18))
    private_dir(cluster.run_dir, OS_USER)
    private_dir(cluster.pgbr_repo, OS_USER)
    pwfile = root / "pw"
    pwfile.write_text(cluster.password + "\n")
    shutil.chown(pwfile, OS_USER, OS_USER)
    pwfile.chmod(0o600)
    log(f"PostgreSQL: initdb in {cluster.data} (port {cluster.port})")
    run(
        [
            PG_BIN / "initdb",
            "-D",
            cluster.data,
            "-U",
            "postgres",
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ],
        user=OS_USER,
    )
    pwfile.unlink()
    cluster.pgbr_conf.write_text(
        "[global]\n"
        f"repo1-path={cluster.pgbr_repo}\n"
        "repo1-retention-full=9999\n"
        "compress-type=zst\n"
        "compress-level=1\n"
        "process-max=2\n"
        f"log-path={root}\n"
        "log-level-file=off\n"
        "log-level-console=warn\n"
        "start-fast=y\n"
        f"lock-path={root / 'run'}\n"
        f"[{STANZA}]\n"
        f"pg1-path={cluster.data}\n"
        f"pg1-port={cluster.port}\n"
        f"pg1-socket-path={cluster.run_dir}\n"
    )
    shutil.chown(cluster.pgbr_conf, OS_USER, OS_USER)
    with (cluster.data / "postgresql.conf").open("a") as fh:
        fh.write(
            "\n# benchmark cluster\n"
            f"port = {cluster.port}\n"
            "listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{cluster.run_dir}'\n"
            "wal_level = replica\n"
            "max_wal_senders = 10\n"
            "max_replication_slots = 10\n"
            "max_slot_wal_keep_size = 8GB\n"
            "wal_compression = on\n"
            "max_wal_size = 4GB\n"
            "checkpoint_timeout = 30min\n"
            "autovacuum = off\n"
            "archive_mode = on\n"
            f"archive_command = 'pgbackrest --config={cluster.pgbr_conf} --stanza={STANZA} "
            "archive-push %p'\n"
        )
    cluster.start()
    log(f"PostgreSQL: pgbench data at scale {scale}")
    pgbench = [
        PG_BIN / "pgbench",
        "-h",
        str(cluster.run_dir),
        "-p",
        str(cluster.port),
        "-U",
        "postgres",
        "postgres",
    ]
    run([*pgbench[:-1], "-i", "-I", "dt", "-s", str(scale), "postgres"], user=OS_USER)
    rows = scale * 100_000
    cluster.sql(
        "INSERT INTO pgbench_branches(bid, bbalance) "
        f"SELECT b, 0 FROM generate_series(1, {scale}) b;"
    )
    cluster.sql(
        "INSERT INTO pgbench_tellers(tid, bid, tbalance) "
        f"SELECT t, (t - 1) / 10 + 1, 0 FROM generate_series(1, {scale * 10}) t;"
    )
    cluster.sql(
        "INSERT INTO pgbench_accounts(aid, bid, abalance, filler) "
        "SELECT a, (a - 1) / 100000 + 1, 0, md5(a::text) || md5((-a)::text) "
        f"FROM generate_series(1, {rows}) a;"
    )
    run([*pgbench[:-1], "-i", "-I", "vp", "-s", str(scale), "postgres"], user=OS_USER)
    cluster.sql("CHECKPOINT")
    cluster.pgbackrest("stanza-create")
    cluster.pgbackrest("check")
    size = int(cluster.sql("SELECT sum(pg_database_size(oid)) FROM pg_database")[0][0])  # type: ignore[arg-type]
    log(f"PostgreSQL: {size / 1e6:.0f} MB in databases")
    return cluster


def update_five_percent(cluster: PgCluster, round_no: int, pattern: str, scale: int) -> int:
    """Update 5 % of pgbench_accounts' rows: ``spread`` (every 20th row, so nearly every
    page changes) or ``range`` (one contiguous 5 % range of aid, another one each round)."""
    if pattern == "range":
        rows_total = scale * 100_000
        width = rows_total // 20
        first = (round_no % 20) * width + 1
        where = f"aid BETWEEN {first} AND {first + width - 1}"
    else:
        where = f"aid % 20 = {round_no % 20}"
    rows = cluster.sql(
        "WITH u AS (UPDATE pgbench_accounts SET abalance = abalance + 1 "
        f"WHERE {where} RETURNING 1) SELECT count(*) FROM u"
    )
    return int(rows[0][0])  # type: ignore[arg-type]


def pgbackrest_last(cluster: PgCluster) -> dict[str, object]:
    info = json.loads(cluster.pgbackrest("info", "--output=json"))
    return info[0]["backup"][-1]  # type: ignore[no-any-return]


def pgbackrest_stored(cluster: PgCluster, backup: dict[str, object]) -> tuple[int, int]:
    """``(backup files, WAL the backup needs)`` as stored in the repository: the backup's
    repository delta, and the archived segments from its start to its stop."""
    delta = int(backup["info"]["repository"]["delta"])  # type: ignore[index]
    first, last = backup["archive"]["start"], backup["archive"]["stop"]  # type: ignore[index]
    wal = 0
    archive = cluster.pgbr_repo / "archive" / STANZA
    for path in archive.rglob("*"):
        name = path.name.split("-", 1)[0]
        if path.is_file() and len(name) == 24 and first <= name <= last:
            wal += path.stat().st_size
    return delta, wal


def pgbackrest_restore_argv(
    cluster: PgCluster, target: Path, port: int, recovery: str = "--type=immediate"
) -> list[str]:
    """Restore the latest backup into ``target`` (an empty directory), start it, wait until
    it is promoted (recovery to the backup's consistent end point, or to what ``recovery``
    names, e.g. ``--type=time '--target=...'``, then a new timeline)."""
    private_dir(target.parent, OS_USER, 0o711)
    private_dir(target, OS_USER)
    script = (
        f"set -e; {' '.join(cluster.pgbackrest_argv())} --pg1-path={target} "
        f"{recovery} --target-action=promote restore; "
        f'echo "port = {port}" >> {target}/postgresql.auto.conf; '
        f'echo "archive_mode = off" >> {target}/postgresql.auto.conf; '
        f"runuser -u {OS_USER} -- {PG_BIN}/pg_ctl start -D {target} -l {target}.log -w -t 3600 -s; "
        f'until [ "$(runuser -u {OS_USER} -- {PG_BIN}/psql -h {cluster.run_dir} -p {port} '
        "-U postgres -Atc 'SELECT pg_is_in_recovery()' postgres 2>/dev/null)\" = f ]; "
        "do sleep 0.05; done"
    )
    return ["bash", "-c", script]


def stop_restored(target: Path) -> None:
    if (target / "postmaster.pid").exists():
        run(
            [PG_BIN / "pg_ctl", "stop", "-D", target, "-m", "immediate", "-w"],
            user=OS_USER,
            check=False,
        )


def drop_restored(target: Path) -> None:
    stop_restored(target)
    shutil.rmtree(target.parent, ignore_errors=True)


def basebackup_argv(cluster: PgCluster, out: Path) -> list[str]:
    return [
        "bash",
        "-c",
        f"set -o pipefail; runuser -u {OS_USER} -- {PG_BIN}/pg_basebackup -h {cluster.run_dir} "
        f"-p {cluster.port} -U postgres -D - -Ft -X fetch -c fast | zstd -1 -T2 -q > {out}",
    ]


def remove(cluster: PgCluster) -> None:
    run(
        [PG_BIN / "pg_ctl", "stop", "-D", cluster.data, "-m", "immediate", "-w"],
        user=OS_USER,
        check=False,
    )
    shutil.rmtree(cluster.root, ignore_errors=True)


__all__ = ["PgCluster", "remove", "setup", "tree_size"]
