"""Offline restore of MariaDB backups: a managed server backed up through the service (full,
then an incremental after more writes), the service stopped and its metadata deleted, the
chain unpacked and prepared into a data directory with the store and the key alone, then
``mariadbd`` started on it as ``mysql``: it holds the source's rows."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from offline_support import lose_the_service, strongroom

from fixtures.live import free_port
from fixtures.service import Harness, make_harness
from support.mariadb import (
    Login,
    query,
    require_mariadb,
    scratch_root,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PASSWORD = "offline-Pw-5e2d"


def completed(h: Harness, backup_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        b: dict[str, Any] = h.a.get(f"/backups/{backup_id}").json()["backup"]
        if b["status"] == "FAILED":
            raise AssertionError(f"backup failed: {b.get('fail_reason')}")
        return b if b["status"] == "COMPLETED" else None

    result: dict[str, Any] = wait_until(done, f"backup {backup_id} completed")
    return result


def contents(login: Login) -> list[tuple[Any, ...]]:
    return query(login, "SELECT id, payload FROM items ORDER BY id") + query(
        login, "SELECT id, body FROM notes ORDER BY id"
    )


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    require_mariadb()
    with scratch_root("sr-offline-mdb-") as path:
        yield path


@pytest.fixture(scope="module")
def backed_up(base: Path) -> dict[str, Any]:
    h = make_harness(base, datastores=["sqlite", "mariadb"], mariadb_allowed_hosts=["127.0.0.1"])
    created = h.a.create_instance(
        "source",
        datastore={"type": "mariadb"},
        databases=[{"name": "app"}],
        users=[{"name": "alice", "password": PASSWORD, "databases": [{"name": "app"}]}],
    )
    view = wait_until(
        lambda: (
            (v := h.a.get(f"/instances/{created['id']}").json()["instance"])["status"] == "ACTIVE"
            and v
        ),
        "the source instance is active",
    )
    login = Login.from_view(view["connection"], "alice", PASSWORD, "app")
    query(login, "CREATE TABLE items (id INT PRIMARY KEY, payload TEXT NOT NULL)")
    query(login, "CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)")
    db = login.connect()
    try:
        with db.cursor() as cur:
            cur.executemany(
                "INSERT INTO items VALUES (%s, %s)",
                [(i, f"item {i} " + "y" * 200) for i in range(5000)],
            )
    finally:
        db.close()
    full = completed(h, h.a.create_backup(created["id"], "full")["id"])
    query(login, "UPDATE items SET payload = 'changed' WHERE id % 13 = 0")
    query(login, "INSERT INTO notes VALUES (1, 'after the full backup'), (2, 'second')")
    query(login, "DELETE FROM items WHERE id >= 4900")
    incr = completed(h, h.a.create_backup(created["id"], "incr", incremental=1)["id"])
    expected = contents(login)
    key = lose_the_service(h)
    return {"full": full, "incr": incr, "key": key, "expected": expected}


def start_mariadbd(base: Path, data: Path) -> tuple[subprocess.Popen[bytes], int]:
    run = base / f"run-{data.name}"
    run.mkdir(mode=0o700)
    shutil.chown(run, "mysql", "mysql")
    port = free_port()
    log = run / "mariadbd.err"
    server = subprocess.Popen(
        [
            shutil.which("mariadbd") or "/usr/sbin/mariadbd",
            f"--defaults-file={data / 'strongroom-restore.cnf'}",
            f"--datadir={data}",
            f"--socket={run / 'mysqld.sock'}",
            f"--pid-file={run / 'mariadbd.pid'}",
            f"--log-error={log}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            "--user=mysql",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=64M",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def ready() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"mariadbd exited: {log.read_text()[-2000:]}")
        return log.exists() and "ready for connections" in log.read_text(errors="replace")

    wait_until(ready, "the restored server started", timeout=120)
    return server, port


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)


def test_offline_restore_mariadb_chain_starts_and_equals_the_source(
    base: Path, backed_up: dict[str, Any]
) -> None:
    target = base / "restored"
    done = strongroom(
        "restore",
        "--from",
        backed_up["incr"]["locationRef"],
        "--key",
        backed_up["key"],
        "--to",
        target,
        "--owner",
        "mysql",
    )
    assert done.returncode == 0, done.stderr
    assert "2 links" in done.stdout
    assert target.stat().st_mode & 0o777 == 0o700
    assert target.owner() == "mysql"
    server, port = start_mariadbd(base, target)
    try:
        login = Login("127.0.0.1", port, "alice", PASSWORD, "app")
        assert contents(login) == backed_up["expected"]
    finally:
        stop(server)


def test_offline_restore_mariadb_tampered_chunk_leaves_the_target_empty(
    base: Path, backed_up: dict[str, Any]
) -> None:
    manifest = Path(backed_up["full"]["locationRef"].removeprefix("file://"))
    chunk = manifest.parent / "chunk-00000000"
    original = chunk.read_bytes()
    blob = bytearray(original)
    blob[40] ^= 0x04
    chunk.write_bytes(bytes(blob))
    try:
        target = base / "refused"
        done = strongroom(
            "restore",
            "--from",
            backed_up["incr"]["locationRef"],
            "--key",
            backed_up["key"],
            "--to",
            target,
        )
        assert done.returncode == 1
        assert "restore refused" in done.stderr and "chunk 0" in done.stderr, done.stderr
        assert not target.exists()
        assert [p.name for p in base.iterdir() if "strongroom-restore" in p.name] == []
    finally:
        chunk.write_bytes(original)
