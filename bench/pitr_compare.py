"""Point-in-time restore side by side with pgBackRest's ``--type=time`` restore.

One PostgreSQL cluster (``pg.setup``: pgbench data, ``archive_command = pgbackrest
archive-push``) is registered with Strongroom as an external server, and Strongroom's
point-in-time archiving starts on it (its replication slot, batches in the backup format).
Then a full backup by each tool, ``BENCH_PITR_LOAD_SECONDS`` (default 600) of pgbench
load while both archive the WAL (pgBackRest whole segments as the server completes them;
Strongroom a batch every ``BENCH_PITR_INTERVAL`` seconds, default 10, the service's
default), then both restore to the same time ``BENCH_PITR_TARGET_BEFORE`` seconds (default
5) before the load ended: ``pgbackrest restore --type=time --target-action=promote``,
start, wait for promotion; Strongroom's restore of the full backup and the batches up to
that time with ``target_time`` (one ``bench.sr_task`` process, as in ``bench.main``).
Both restored clusters must hold the same rows: a count and an order-independent sum of
row hashes of each pgbench table are compared, and the run fails if they differ.

RPO of a commit (every commit record in the WAL written during the load, found with
``pg_waldump``: its server time and position): when the first thing holding it was
stored, minus its commit time. Strongroom: the batch whose WAL range holds the record,
stored when ``store_batch`` returned. pgBackRest: the segment holding the record, stored
at its repository file's modification time. At the end of the load both are flushed once
at the same moment: Strongroom stores a last batch, the server switches to a new segment
(``pg_switch_wal``) so pgBackRest archives the partial one (with the default
``archive_timeout = 0`` it would wait for the next 16 MiB of WAL).

    bash bench/run.sh pitr             (as root; BENCH_PITR_LOAD_SECONDS=60 for a quick run)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench import pg, sr_task
from bench.common import (
    WORK,
    Sample,
    free_port,
    log,
    measure,
    prepare_restore,
    run,
    write_result,
)
from bench.main import StrongroomTask
from strongroom.domain.pitr import WalBatch
from strongroom.engines.postgresql import PostgresEngine, session
from strongroom.services.transfer import Transfer
from strongroom.services.wal_archive import StoredBatch, WalArchive, batches_for

SCALE = int(os.environ.get("BENCH_PITR_SCALE", "10"))
LOAD_SECONDS = float(os.environ.get("BENCH_PITR_LOAD_SECONDS", "600"))
INTERVAL = float(os.environ.get("BENCH_PITR_INTERVAL", "10"))
TARGET_BEFORE = float(os.environ.get("BENCH_PITR_TARGET_BEFORE", "5"))
CLIENTS = int(os.environ.get("BENCH_PITR_CLIENTS", "4"))
INSTANCE_ID = "00000000-0000-4000-8000-00000000b17e"
TABLES = {
    "pgbench_accounts": "aid",
    "pgbench_branches": "bid",
    "pgbench_tellers": "tid",
    "pgbench_history": None,
}
COMMIT = re.compile(
    r"len \(rec/tot\):\s*\d+/\s*(\d+), tx:\s*\d+, lsn: ([0-9A-F]+)/([0-9A-F]+),.*"
    r"desc: COMMIT (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def server_now(cluster: pg.PgCluster) -> tuple[datetime, int]:
    """The server's clock (naive UTC) and its WAL insert position."""
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT clock_timestamp(), pg_current_wal_insert_lsn() - '0/0'::pg_lsn"
        ).fetchone()
    assert row is not None
    return row[0].astimezone(UTC).replace(tzinfo=None), int(row[1])


@dataclass(frozen=True)
class Commit:
    at: datetime
    lsn: int
    end: int


class Archiver(threading.Thread):
    """Strongroom's archiving as the service's loop runs it: a batch every ``INTERVAL``
    seconds from where the last one stopped; one more when told to stop."""

    def __init__(
        self, transfer: Transfer, engine: PostgresEngine, conn: dict[str, Any], start: int
    ) -> None:
        super().__init__(daemon=True)
        self.archive = WalArchive(transfer)
        self.engine = engine
        self.conn = conn
        self.position = start
        self.stored: list[tuple[StoredBatch, datetime]] = []
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while True:
                stopping = self.stop_event.wait(INTERVAL)
                batch = self.archive.store_batch(
                    engine=self.engine,
                    connection=self.conn,
                    project_id=sr_task.PROJECT,
                    instance_id=INSTANCE_ID,
                    datastore="postgresql",
                    store_name="local",
                    container=sr_task.CONTAINER,
                    start=self.position,
                )
                self.stored.append((batch, utcnow()))
                self.position = batch.stop
                if stopping:
                    return
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def finish(self) -> list[tuple[StoredBatch, datetime]]:
        self.stop_event.set()
        self.join()
        if self.error is not None:
            raise RuntimeError("Strongroom's archiving failed") from self.error
        return self.stored


def table_sums(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, int]]:
    """Per pgbench table: rows, and the sum of a 60-bit hash of each row's text."""
    sums = {}
    for table in TABLES:
        row = conn.execute(
            f"SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)"
            f"::bigint), 0) FROM {table} t"
        ).fetchone()
        assert row is not None
        sums[table] = (int(row[0]), int(row[1]))
    return sums


def segment_name(timeline: int, lsn: int, segment_size: int) -> str:
    per_id = 0x1_0000_0000 // segment_size
    segno = lsn // segment_size
    return f"{timeline:08X}{segno // per_id:08X}{segno % per_id:08X}"


def pgbackrest_segments(cluster: pg.PgCluster) -> dict[str, Path]:
    """Archived segment name → its repository file."""
    found = {}
    for path in (cluster.pgbr_repo / "archive" / pg.STANZA).rglob("*"):
        name = path.name
        if path.is_file() and len(name) > 25 and name[24] == "-":
            found[name[:24]] = path
    return found


def commits_in(
    cluster: pg.PgCluster, segments: dict[str, Path], first: int, last: int, segment_size: int
) -> list[Commit]:
    """Every commit record in WAL ``[first, last)``, read from pgBackRest's archive."""
    scratch = Path(tempfile.mkdtemp(prefix="pitr-waldump-", dir=WORK))
    try:
        wanted = {segment_name(1, lsn, segment_size) for lsn in range(first, last, segment_size)}
        wanted.add(segment_name(1, last, segment_size))
        for name in sorted(wanted):
            run(["zstd", "-dqf", segments[name], "-o", scratch / name])
        out = run(
            [
                pg.PG_BIN / "pg_waldump",
                "-p",
                scratch,
                "-r",
                "Transaction",
                "-s",
                f"{first >> 32:X}/{first & 0xFFFFFFFF:X}",
                "-e",
                f"{last >> 32:X}/{last & 0xFFFFFFFF:X}",
            ],
            env={"TZ": "UTC"},
        ).stdout
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    commits = []
    for line in out.splitlines():
        m = COMMIT.search(line)
        if m:
            lsn = (int(m[2], 16) << 32) | int(m[3], 16)
            commits.append(Commit(datetime.fromisoformat(m[4]), lsn, lsn + int(m[1])))
    return commits


def rpo_figures(values: list[float]) -> tuple[float, float, float]:
    values = sorted(values)
    return statistics.median(values), values[int(len(values) * 0.99)], values[-1]


def wait_archived(cluster: pg.PgCluster, segment: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = cluster.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        if str(row[0][0])[:24] >= segment:
            return
        time.sleep(0.05)
    raise RuntimeError(f"pgBackRest did not archive {segment} in {timeout:.0f} s")


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    WORK.chmod(0o711)
    shutil.rmtree(WORK / "strongroom", ignore_errors=True)
    begun = time.monotonic()
    cluster = pg.setup(SCALE, name="pitr")
    sr = StrongroomTask("pg", "pitr")
    engine = PostgresEngine(allowed_hosts=("127.0.0.1",), allowed_data_dirs=(WORK,))
    conn: dict[str, Any] = {}
    restored_dirs: list[Path] = []
    try:
        sr.register(cluster.connection_params())
        conn = json.loads(sr.conn.read_text())
        transfer = sr_task._transfer((WORK / "strongroom").resolve())
        segment_size = int(
            str(
                cluster.sql("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")[0][0]
            )
        )
        start = engine.start_archiving(conn)
        backup_started = utcnow()
        sr_full = sr.backup("full")
        log(f"Strongroom full backup: {sr_full.wall:.1f} s")
        pgbr_full = measure(cluster.pgbackrest_argv("backup", "--type=full"))
        log(f"pgBackRest full backup: {pgbr_full.wall:.1f} s")

        archiver = Archiver(transfer, engine, conn, start)
        load_from, first_lsn = server_now(cluster)
        archiver.start()
        log(f"pgbench: {LOAD_SECONDS:.0f} s, {CLIENTS} clients, scale {SCALE}")
        out = run(
            [
                pg.PG_BIN / "pgbench",
                "-h",
                cluster.run_dir,
                "-p",
                str(cluster.port),
                "-U",
                "postgres",
                "-n",
                "-c",
                str(CLIENTS),
                "-j",
                "2",
                "-T",
                str(int(LOAD_SECONDS)),
                "postgres",
            ],
            user=pg.OS_USER,
            timeout=LOAD_SECONDS + 600,
        ).stdout
        load_to, last_lsn = server_now(cluster)
        # Both flushed once, at the same moment: Strongroom's last batch, a new segment.
        switched_segment = str(cluster.sql("SELECT pg_walfile_name(pg_switch_wal())")[0][0])
        stored = archiver.finish()
        wait_archived(cluster, switched_segment)
        found = re.search(r"tps = ([\d.]+)", out)
        tps = f"{float(found[1]):,.0f}" if found else "?"
        log(f"load done: {tps} tps; last Strongroom batch stored")

        target = load_to - timedelta(seconds=TARGET_BEFORE)
        catalog = []
        previous = backup_started
        for batch, at in stored:
            catalog.append(
                WalBatch(
                    batch.batch_id,
                    batch.project_id,
                    batch.instance_id,
                    batch.store_name,
                    batch.container,
                    batch.start,
                    batch.stop,
                    previous,
                    batch.archived_through,
                    at,
                )
            )
            previous = batch.archived_through
        replay = batches_for(catalog, backup_started, target)
        archive_file = WORK / "pitr-archive.json"
        archive_file.write_text(
            json.dumps(
                [{**asdict(b), "archived_through": b.archived_through.isoformat()} for b in replay]
            )
        )
        target_text = target.isoformat(sep=" ", timespec="microseconds") + "+00"
        runs = int(os.environ.get("BENCH_PITR_RESTORE_RUNS", "1"))
        walls: dict[str, list[float]] = {"Strongroom": [], "pgBackRest": []}
        cpus: dict[str, list[float]] = {"Strongroom": [], "pgBackRest": []}
        in_process: list[float] = []
        sums: dict[str, dict[str, tuple[int, int]]] = {}
        for r in range(runs):
            for tool in (
                ["pgBackRest", "Strongroom"] if r % 2 == 0 else ["Strongroom", "pgBackRest"]
            ):
                prepare_restore()
                if tool == "pgBackRest":
                    home = WORK / f"pitr-pgbr-restore-{r}" / "data"
                    port = free_port()
                    sample = measure(
                        pg.pgbackrest_restore_argv(
                            cluster, home, port, f"--type=time '--target={target_text}'"
                        )
                    )
                    restored_dirs.append(home)
                    with psycopg.connect(
                        f"host={cluster.run_dir} port={port} user=postgres dbname=postgres",
                        autocommit=True,
                    ) as c:
                        sums[tool] = table_sums(c)
                    pg.stop_restored(home)
                else:
                    sample, restored = strongroom_restore(sr, r, archive_file, target)
                    in_process.append(json.loads(sample.stdout)["op_seconds"])
                    with session.connect(restored, dbname="postgres") as c:
                        sums[tool] = table_sums(c)
                    strongroom_stop(sr, r)
                walls[tool].append(sample.wall)
                cpus[tool].append(sample.cpu)
                log(f"  {tool} restore to {target_text}: {sample.wall:.2f} s")
            if sums["Strongroom"] != sums["pgBackRest"]:
                raise RuntimeError(
                    f"the restored clusters differ: Strongroom {sums['Strongroom']}, "
                    f"pgBackRest {sums['pgBackRest']}"
                )
            for home in restored_dirs:
                pg.drop_restored(home)
            restored_dirs.clear()
            strongroom_cleanup(sr, r)

        log("RPO: reading the commit records of the load from the archived WAL")
        segments = pgbackrest_segments(cluster)
        commits = [
            commit
            for commit in commits_in(cluster, segments, first_lsn, last_lsn, segment_size)
            if load_from <= commit.at <= load_to
        ]
        archived_at = {
            name: datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(tzinfo=None)
            for name, path in segments.items()
        }
        sr_rpo, pgbr_rpo, after_switch = [], [], 0
        for commit in commits:
            done = next(at for b, at in stored if b.stop > commit.lsn)
            sr_rpo.append((done - commit.at).total_seconds())
            seg = segment_name(1, commit.end, segment_size)
            after_switch += seg == switched_segment
            pgbr_rpo.append((archived_at[seg] - commit.at).total_seconds())
        wal_mb = (stored[-1][0].stop - stored[0][0].start) / 1e6
        # Each pgbench transaction adds one history row; the archiver's markers commit
        # too (one per batch), so the rows restored must be the commits up to the target
        # less the markers among them.
        history = sums["Strongroom"]["pgbench_history"][0]
        markers = sum(1 for b, _ in stored if load_from <= b.archived_through <= target)
        expected = sum(1 for commit in commits if commit.at <= target) - markers
        if abs(history - expected) > 1:
            raise RuntimeError(
                f"restored {history} history rows, {expected} commits lie before the target"
            )
        sr_stored = sum(
            os.path.getsize(os.path.join(d, f))
            for d, _dirs, files in os.walk(WORK / "strongroom" / "objects")
            if INSTANCE_ID in d
            for f in files
        )
        first_segment = segment_name(1, stored[0][0].start, segment_size)
        pgbr_stored = sum(
            path.stat().st_size
            for name, path in segments.items()
            if first_segment <= name <= switched_segment
        )
        text = report(
            commits=len(commits),
            tps=tps,
            batches=len(stored),
            wal_mb=wal_mb,
            target=target_text,
            sums=sums["Strongroom"],
            sr_rpo=rpo_figures(sr_rpo),
            pgbr_rpo=rpo_figures(pgbr_rpo),
            after_switch=after_switch,
            expected=expected,
            stored_mb=(sr_stored / 1e6, pgbr_stored / 1e6),
            walls=walls,
            cpus=cpus,
            in_process=in_process,
            fulls=(sr_full, pgbr_full),
            minutes=(time.monotonic() - begun) / 60,
        )
    finally:
        for home in restored_dirs:
            pg.drop_restored(home)
        if conn:
            engine.stop_archiving(conn)
        pg.remove(cluster)
        shutil.rmtree(WORK / "strongroom", ignore_errors=True)
    write_result(text, f"pitr-{int(LOAD_SECONDS)}s")
    return 0


def restored_paths(r: int) -> tuple[Path, Path]:
    """Round ``r``'s Strongroom-restored instance: its home, its connection file."""
    return WORK / "strongroom" / "instances" / f"pitr-restore-{r}", WORK / f"pitr-restored-{r}.json"


def strongroom_restore(
    sr: StrongroomTask, r: int, archive_file: Path, target: datetime
) -> tuple[Sample, dict[str, Any]]:
    home, out = restored_paths(r)
    sample = measure(
        sr.restore_argv(
            "full",
            home,
            out,
            "--archive",
            str(archive_file),
            "--target-time",
            target.isoformat(),
        )
    )
    return sample, json.loads(out.read_text())


def strongroom_stop(sr: StrongroomTask, r: int) -> None:
    home, out = restored_paths(r)
    subprocess.run(sr._argv("stop", "--home", str(home), "--conn", str(out)), check=True)


def strongroom_cleanup(sr: StrongroomTask, r: int) -> None:
    home, out = restored_paths(r)
    if out.exists():
        subprocess.run(sr._argv("destroy", "--home", str(home), "--conn", str(out)), check=True)
        out.unlink()


def report(
    *,
    commits: int,
    tps: str,
    batches: int,
    wal_mb: float,
    target: str,
    sums: dict[str, tuple[int, int]],
    sr_rpo: tuple[float, float, float],
    pgbr_rpo: tuple[float, float, float],
    after_switch: int,
    expected: int,
    stored_mb: tuple[float, float],
    walls: dict[str, list[float]],
    cpus: dict[str, list[float]],
    in_process: list[float],
    fulls: tuple[Sample, Sample],
    minutes: float,
) -> str:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    def spread(values: list[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:.2f}"
        return f"{med(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    sr_wall, pgbr_wall = med(walls["Strongroom"]), med(walls["pgBackRest"])
    rows = [
        f"PostgreSQL point-in-time restore, pgbench scale {SCALE}: full backups, then "
        f"{LOAD_SECONDS:.0f} s of pgbench ({CLIENTS} clients, {tps} tps, {commits:,} commits, "
        f"{wal_mb:,.0f} MB of WAL), Strongroom batches every {INTERVAL:.0f} s ({batches}); "
        f"restore to {target} ({TARGET_BEFORE:.0f} s before the load ended), "
        f"{len(walls['Strongroom'])} restore(s) each, {os.cpu_count()} CPUs, "
        f"whole run {minutes:.1f} min.",
        "",
        "| figure | Strongroom | pgBackRest | ratio |",
        "|---|---|---|---|",
    ]
    for name, i in (("median", 0), ("p99", 1), ("max", 2)):
        rows.append(
            f"| RPO {name} s | {sr_rpo[i]:.2f} | {pgbr_rpo[i]:.2f} | "
            f"{sr_rpo[i] / pgbr_rpo[i]:.2f} |"
        )
    rows += [
        f"| restore wall s | {spread(walls['Strongroom'])} | {spread(walls['pgBackRest'])} | "
        f"{sr_wall / pgbr_wall:.2f} |",
        f"| restore in-process s | {spread(in_process)} | - | {med(in_process) / pgbr_wall:.2f} |",
        f"| restore CPU s | {spread(cpus['Strongroom'])} | {spread(cpus['pgBackRest'])} | "
        f"{med(cpus['Strongroom']) / med(cpus['pgBackRest']):.2f} |",
        f"| full backup wall s | {fulls[0].wall:.2f} | {fulls[1].wall:.2f} | "
        f"{fulls[0].wall / fulls[1].wall:.2f} |",
        f"| archived WAL stored MB | {stored_mb[0]:,.1f} | {stored_mb[1]:,.1f} | "
        f"{stored_mb[0] / stored_mb[1]:.2f} |",
        "",
        "Both restored clusters hold the same rows (count, sum of row hashes): "
        + ", ".join(f"{t} {n:,}" for t, (n, _) in sums.items())
        + f" ({expected:,} transactions of pgbench committed at or before the target). "
        f"{after_switch:,} commits lay in the segment pgBackRest archived only after "
        "the switch at the end of the load.",
        "",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
