"""`strongroom metadata backup` writes the metadata database into a store, encrypted like a
tenant's backup; the offline restore rebuilds it into a file equal to the source."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from offline_support import strongroom

from strongroom.pipeline.keys import MasterKey


def table_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: sorted(db.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}
    finally:
        db.close()


def test_metadata_backup_restores_offline_into_an_equal_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert strongroom("db", "upgrade", "--data-dir", data).returncode == 0
    made = strongroom("token", "create", "--data-dir", data, "--project-id", "p1")
    assert made.returncode == 0, made.stderr
    MasterKey.load_or_create(data / "master.key")  # as the service's first start does
    source = data / "strongroom.db"
    token_value = made.stdout.strip().split()[-1]

    done = strongroom("metadata", "backup", "--data-dir", data)
    assert done.returncode == 0, done.stderr
    backup_id, url = done.stdout.split()[:2]

    # The stored objects do not hold the metadata in clear (token digests, sealed secrets).
    stored = b"".join(p.read_bytes() for p in (data).rglob(f"*{backup_id}*") if p.is_file())
    stored += b"".join(
        p.read_bytes() for d in data.rglob(f"*{backup_id}*") if d.is_dir() for p in d.iterdir()
    )
    assert stored and b"SQLite format 3" not in stored
    assert token_value.encode() not in stored

    target = tmp_path / "restored.db"
    back = strongroom("restore", "--from", url, "--key", data / "master.key", "--to", target)
    assert back.returncode == 0, back.stderr
    assert table_rows(target) == table_rows(source)
    assert sqlite3.connect(target).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # No temporary copy of the database is left in data_dir.
    assert not list(data.glob(".metadata-backup-*"))


def test_metadata_backup_refuses_without_a_master_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert strongroom("db", "upgrade", "--data-dir", data).returncode == 0
    (data / "master.key").unlink(missing_ok=True)
    done = strongroom("metadata", "backup", "--data-dir", data)
    assert done.returncode == 2
    assert "master key" in done.stderr
    assert "Traceback" not in done.stderr


def test_metadata_backup_names_an_unknown_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert strongroom("db", "upgrade", "--data-dir", data).returncode == 0
    MasterKey.load_or_create(data / "master.key")
    done = strongroom("metadata", "backup", "--data-dir", data, "--store", "elsewhere")
    assert done.returncode == 2
    assert "elsewhere" in done.stderr


def test_no_tenant_can_register_the_metadata_backup(tmp_path: Path) -> None:
    """Its manifest names the service's own project: even a project given that very name
    cannot register it through restore_from."""
    from fixtures.service import Caller, make_harness
    from strongroom.domain.model import SERVICE_PROJECT

    h = make_harness(tmp_path)
    try:
        done = strongroom("metadata", "backup", "--data-dir", h.settings.data_dir)
        assert done.returncode == 0, done.stderr
        url = done.stdout.split()[1]
        versions = h.a.get("/datastores/sqlite/versions").json()["versions"]
        restore_from = {
            "remote_location": url,
            "local_datastore_version_id": versions[0]["id"],
            "size": 0.1,
        }
        for role in ("member", "admin"):
            caller = Caller(h.client, SERVICE_PROJECT, h.token(SERVICE_PROJECT, role))
            r = caller.post("/backups", {"backup": {"name": "x", "restore_from": restore_from}})
            assert r.status_code == 400, r.text
            assert caller.get("/backups").json()["backups"] == []
    finally:
        h.container.close()
