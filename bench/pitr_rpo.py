"""Recovery point objective of point-in-time archiving, and the time to restore to a point.

A managed PostgreSQL (or, with ``BENCH_PITR_DATASTORE=mariadb``, MariaDB) server takes a
full backup, then a writer commits rows as fast as it can for ``BENCH_PITR_SECONDS``
(default 60) while the archiver stores a batch every ``BENCH_PITR_INTERVAL`` seconds
(default 10, the service's default) into a local store in the backup format. RPO of
a commit = when the first batch covering it was stored minus when the commit returned.
Then a restore to the last archived time, timed.

    .venv/bin/python -m bench.pitr_rpo        (as root: the server runs as its own user)
    BENCH_PITR_DATASTORE=mariadb .venv/bin/python -m bench.pitr_rpo
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from strongroom.engines.base import Connection, DatabaseSpec, InstanceRequest, RestoreInput
from strongroom.engines.mariadb import MariaDbEngine
from strongroom.engines.mariadb.sessions import managed_session
from strongroom.engines.postgresql import PostgresEngine, session
from strongroom.pipeline.keys import MasterKey
from strongroom.services.rules import ServiceRules
from strongroom.services.stores import StoreCatalog
from strongroom.services.transfer import Transfer
from strongroom.services.wal_archive import StoredBatch, WalArchive
from strongroom.storage.local import LocalBackend
from strongroom.storage.registry import StoreSet

SECONDS = float(os.environ.get("BENCH_PITR_SECONDS", "60"))
INTERVAL = float(os.environ.get("BENCH_PITR_INTERVAL", "10"))
DATASTORE = os.environ.get("BENCH_PITR_DATASTORE", "postgresql")
Run = Callable[[str], list[tuple[Any, ...]]]
SCHEMA = {
    "postgresql": "CREATE TABLE ticks (n bigserial PRIMARY KEY, at timestamptz, pad text)",
    "mariadb": "CREATE TABLE bench.ticks (n bigint AUTO_INCREMENT PRIMARY KEY, "
    "at datetime(6), pad text)",
}
INSERT = {
    "postgresql": "INSERT INTO ticks (at, pad) VALUES (now(), repeat('x', 200))",
    "mariadb": "INSERT INTO bench.ticks (at, pad) VALUES (NOW(6), REPEAT('x', 200))",
}
COUNT = {"postgresql": "SELECT count(*) FROM ticks", "mariadb": "SELECT COUNT(*) FROM bench.ticks"}


@contextmanager
def sql(conn: Connection) -> Iterator[Run]:
    """One session with the server of ``conn``: a function running a statement."""
    if DATASTORE == "mariadb":
        with managed_session(conn) as cursor:

            def run_mariadb(statement: str) -> list[tuple[Any, ...]]:
                cursor.execute(statement)
                return list(cursor.fetchall())

            yield run_mariadb
        return
    with session.connect(conn) as c:

        def run_postgresql(statement: str) -> list[tuple[Any, ...]]:
            cur = c.execute(statement)
            return list(cur.fetchall()) if cur.description else []

        yield run_postgresql


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def stored_bytes(root: Path) -> int:
    """Bytes the archive takes in the store (compressed and sealed)."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="strongroom-pitr-bench-"))
    os.chmod(base, 0o711)
    engine: PostgresEngine | MariaDbEngine = (
        MariaDbEngine(timeout=600) if DATASTORE == "mariadb" else PostgresEngine(timeout=600)
    )
    stores = StoreSet({"local": LocalBackend(base / "store")}, "local")
    archive = WalArchive(Transfer(StoreCatalog(stores, MasterKey.generate()), ServiceRules()))
    conn = engine.create_instance(base / "src", InstanceRequest("src", (DatabaseSpec("bench"),)))
    instance_id = "00000000-0000-4000-8000-000000000001"
    try:
        with sql(conn) as run:
            run(SCHEMA[DATASTORE])
        position = engine.start_archiving(conn)
        with (base / "full.tar").open("wb") as fh:
            full = engine.backup(conn, fh, parent=None).metadata
        commits: list[datetime] = []
        stop = threading.Event()

        def write() -> None:
            with sql(conn) as run:
                while not stop.is_set():
                    run(INSERT[DATASTORE])
                    commits.append(utcnow())

        writer = threading.Thread(target=write)
        writer.start()
        stored: list[tuple[StoredBatch, datetime]] = []
        end = time.monotonic() + SECONDS
        while True:
            time.sleep(max(0.0, min(INTERVAL, end - time.monotonic())))
            if time.monotonic() >= end:
                stop.set()
                writer.join()
            batch = archive.store_batch(
                engine=engine,
                connection=conn,
                project_id="bench",
                instance_id=instance_id,
                datastore=DATASTORE,
                store_name="local",
                container="database-backups",
                start=position,
            )
            stored.append((batch, utcnow()))
            position = batch.stop
            if stop.is_set():
                break
        rpo = []
        for committed in commits:
            done = next(at for b, at in stored if b.archived_through >= committed)
            rpo.append((done - committed).total_seconds())
        rpo.sort()
        print(
            f"commits: {len(commits)} in {SECONDS:.0f} s; batches: {len(stored)} "
            f"every {INTERVAL:.0f} s; archive stored: {stored_bytes(base / 'store') / 1e6:.1f} MB"
        )
        print(
            f"RPO (commit returned -> stored in a batch): median {statistics.median(rpo):.2f} s,"
            f" p99 {rpo[int(len(rpo) * 0.99)]:.2f} s, max {rpo[-1]:.2f} s"
        )
        target = stored[-1][0].archived_through
        started = time.monotonic()
        with (base / "full.tar").open("rb") as fh:
            restored = engine.restore_instance(
                base / "restored",
                [RestoreInput(full, fh)],
                InstanceRequest("restored"),
                archive=archive.open_batches([b for b, _ in stored]),
                target_time=target,
            )
        took = time.monotonic() - started
        with sql(restored) as run:
            row = run(COUNT[DATASTORE])[0]
        print(
            f"restore to {target.isoformat()}Z (full backup + "
            f"{stored_bytes(base / 'store') / 1e6:.1f} MB stored):"
            f" {took:.1f} s, {row[0] if row else 0} rows"
        )
        engine.destroy_instance(base / "restored", restored)
    finally:
        engine.stop_archiving(conn)
        engine.destroy_instance(base / "src", conn)
        stores.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
