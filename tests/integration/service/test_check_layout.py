"""`strongroom check` looks only at keys of the service's layout in the containers its
backups use: another application's files in a container a strategy points at are never
listed or removed; temporary objects a killed writer left are removed once old enough.
Real service, real local store."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

from fixtures.service import make_harness
from strongroom.bootstrap import build_checker, rules_from
from strongroom.storage.base import TEMP_PREFIX

HOUR = 3600


def check(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "strongroom", "check", "--data-dir", str(data_dir), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "STRONGROOM_DATASTORES": '["sqlite"]'},
    )


def write(path: Path, data: bytes, *, age: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


def test_foreign_files_in_a_strategy_container_are_never_listed_or_removed(tmp_path):
    h = make_harness(tmp_path)
    data = h.settings.data_dir
    objects = data / "objects"
    foreign = [
        write(objects / "other_app" / "reports" / "2026" / "ledger.csv", b"ledger"),
        write(objects / "other_app" / "ledger.csv", b"ledger"),
        write(objects / "other_app" / str(uuid.uuid4()) / "ledger.csv", b"ledger"),
        write(objects / "other_app" / "x" / "manifest.json", b"{}"),
        write(objects / "other_app" / f"{TEMP_PREFIX}theirs", b"t", age=2 * HOUR),
    ]
    try:
        inst = h.a.wait_instance(h.a.create_instance()["id"])
        r = h.a.post("/backup_strategies", {"backup_strategy": {"swift_container": "other_app"}})
        assert r.status_code == 202, r.text
        # A strategy alone does not make a container the service's.
        assert check(data).returncode == 0
        kept = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
        lost = h.a.wait_backup(h.a.create_backup(inst["id"], "lost")["id"])
    finally:
        h.container.close()
    assert (objects / "other_app" / kept["id"] / "manifest.json").exists()
    with sqlite3.connect(data / "strongroom.db") as db:  # a failed clean-up: no row
        db.execute("delete from backups where id = ?", (lost["id"],))
    lost_keys = sorted(
        f"other_app/{lost['id']}/{p.name}" for p in (objects / "other_app" / lost["id"]).iterdir()
    )
    # Chunks without a manifest cannot be proven the service's: reported, never removed.
    unproven = write(objects / "other_app" / str(uuid.uuid4()) / "chunk-00000000", b"left over")
    unproven_key = f"local:other_app/{unproven.parent.name}/chunk-00000000"

    found = check(data)
    assert found.returncode == 1
    assert found.stdout.splitlines() == [
        *(f"orphaned object: local:{k}" for k in lost_keys),
        f"kept, not verified as this service's: {unproven_key}: "
        "no manifest, and chunks cannot be verified without one",
    ]

    fixed = check(data, "--fix")
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr  # the unverified chunk is left
    assert all(f"removed: local:{k}" in fixed.stdout.splitlines() for k in lost_keys)
    assert f"removed {len(lost_keys)} orphaned objects" in fixed.stdout
    assert unproven.exists()
    assert all(f.exists() for f in foreign)
    assert (objects / "other_app" / kept["id"] / "manifest.json").exists()
    unproven.unlink()
    assert check(data).returncode == 0


def test_stale_temporary_objects_are_reported_and_removed_fresh_ones_kept(tmp_path):
    h = make_harness(tmp_path)
    try:
        inst = h.a.wait_instance(h.a.create_instance()["id"])
        with sqlite3.connect(inst["connection"]["path"]) as db:
            db.execute("create table t(x)")
            db.executemany("insert into t values (?)", [(i,) for i in range(500)])
        backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
    finally:
        h.container.close()
    data = h.settings.data_dir
    here = data / "objects" / "database-backups" / backup["id"]
    stale = write(here / f"{TEMP_PREFIX}killed", b"partial", age=2 * HOUR)
    fresh = write(here / f"{TEMP_PREFIX}writing", b"partial", age=HOUR / 2)
    elsewhere = data / "objects" / "database-backups" / str(uuid.uuid4())
    stale_orphan = write(elsewhere / f"{TEMP_PREFIX}killed", b"partial", age=3 * HOUR)

    found = check(data)
    assert found.returncode == 1
    assert sorted(found.stdout.splitlines()) == sorted(
        [
            f"stale temporary object: local:database-backups/{backup['id']}/{stale.name}",
            f"stale temporary object: local:database-backups/{elsewhere.name}/{stale.name}",
        ]
    )
    fixed = check(data, "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"removed: local:database-backups/{backup['id']}/{stale.name}" in fixed.stdout
    assert not stale.exists() and not stale_orphan.exists()
    assert fresh.exists()
    assert check(data).returncode == 0

    # A shorter bound (setting) makes the other one stale too.
    env_bound = subprocess.run(
        [sys.executable, "-m", "strongroom", "check", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "STRONGROOM_DATASTORES": '["sqlite"]',
            "STRONGROOM_TEMPORARY_OBJECT_MAX_AGE_SECONDS": "600",
        },
    )
    assert f"stale temporary object: local:database-backups/{backup['id']}/{fresh.name}" in (
        env_bound.stdout
    )
    # The backup is untouched: it restores.
    h = make_harness(tmp_path)
    try:
        r = h.a.post(
            "/instances",
            {"instance": {"name": "r", "restorePoint": {"backupRef": backup["id"]}}},
        )
        restored = h.a.wait_instance(r.json()["instance"]["id"])
        with sqlite3.connect(restored["connection"]["path"]) as db:
            assert db.execute("select count(*) from t").fetchone() == (500,)
    finally:
        h.container.close()


def test_the_reaper_removes_stale_temporary_objects(tmp_path):
    h = make_harness(tmp_path)
    try:
        inst = h.a.wait_instance(h.a.create_instance()["id"])
        backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
        here = h.settings.data_dir / "objects" / "database-backups" / backup["id"]
        stale = write(here / f"{TEMP_PREFIX}killed", b"partial", age=2 * HOUR)
        fresh = write(here / f"{TEMP_PREFIX}writing", b"partial")
        h.container.reaper.reap()
        assert not stale.exists()
        assert fresh.exists()
        assert (here / "manifest.json").exists()
    finally:
        h.container.close()


def test_a_registered_chains_objects_are_not_orphans(tmp_path):
    """A restore_from registration of an incremental keeps its parents' objects, found
    through its manifest, even when no row of this service names them."""
    h = make_harness(tmp_path)
    try:
        inst = h.a.wait_instance(h.a.create_instance()["id"])
        full = h.a.wait_backup(h.a.create_backup(inst["id"], "full")["id"])
        incr = h.a.wait_backup(h.a.create_backup(inst["id"], "incr", incremental=1)["id"])
        with h.container.uow(write=True) as uow:  # the rows are gone, the objects not
            uow.backups.remove(incr["id"])
            uow.backups.remove(full["id"])
            uow.commit()
        version = h.a.get("/datastores/sqlite").json()["datastore"]["default_version"]
        r = h.a.post(
            "/backups",
            {
                "backup": {
                    "name": "imported",
                    "restore_from": {
                        "remote_location": incr["locationRef"],
                        "local_datastore_version_id": version,
                        "size": 0.1,
                    },
                }
            },
        )
        assert r.status_code == 202, r.text
        report = build_checker(h.settings).run(fix=True)
        assert report.clean, report
        assert report.removed_keys == []
    finally:
        h.container.close()
    base = h.settings.data_dir / "objects" / "database-backups"
    assert (base / full["id"] / "manifest.json").exists()
    assert (base / incr["id"] / "manifest.json").exists()


class _RowCommittedDuringListing:
    """The stores, where listing a container is when another process commits the row of
    a new backup whose first object is already there (the scaled-out race)."""

    def __init__(self, stores, on_list) -> None:
        self._stores = stores
        self._on_list = on_list
        self.default_name = stores.default_name

    def names(self):
        return self._stores.names()

    def get(self, name):
        inner = self._stores.backend(name)
        on_list = self._on_list

        class Listing:
            def __getattr__(self, attr):
                return getattr(inner, attr)

            def list(self, prefix):
                keys = inner.list(prefix)
                on_list()
                return keys

        return Listing()

    def resolve_url(self, url):
        return self._stores.locate(url)

    def close(self) -> None:
        return None


def test_check_never_removes_a_backup_created_while_it_listed(tmp_path):
    from datetime import UTC, datetime

    from strongroom.domain.model import Backup, BackupId, BackupState, InstanceId, ProjectId
    from strongroom.services.consistency import ConsistencyChecker
    from strongroom.services.stores import StoreCatalog

    h = make_harness(tmp_path)
    try:
        inst = h.a.wait_instance(h.a.create_instance()["id"])
        new_id = str(uuid.uuid4())
        first = write(
            h.settings.data_dir / "objects" / "database-backups" / new_id / "chunk-00000000",
            b"being written",
        )

        def commit_row() -> None:
            now = datetime.now(UTC).replace(tzinfo=None)
            with h.container.uow(write=True) as uow:
                if uow.backups.find(new_id) is None:
                    uow.backups.add(
                        Backup(
                            BackupId(new_id), ProjectId(h.a.project), "new", None,
                            InstanceId(inst["id"]), None, BackupState.BUILDING, now, now,
                            store_name="local", container="database-backups",
                        )
                    )  # fmt: skip
                    uow.commit()

        stores = StoreCatalog(
            _RowCommittedDuringListing(h.container.stores, commit_row),
            h.container.stores.master_key,
        )
        checker = ConsistencyChecker(
            uow=h.container.uow, stores=stores, rules=rules_from(h.settings)
        )
        report = checker.run(fix=True)
        assert report.orphaned == {} and report.removed_keys == []
        assert first.exists()
    finally:
        h.container.close()


def test_a_restarted_embedded_service_removes_stale_temporary_objects(tmp_path):
    h = make_harness(tmp_path)
    try:
        inst = h.a.wait_instance(h.a.create_instance()["id"])
        backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
    finally:
        h.container.close()
    here = h.settings.data_dir / "objects" / "database-backups" / backup["id"]
    stale = write(here / f"{TEMP_PREFIX}killed", b"partial", age=2 * HOUR)
    fresh = write(here / f"{TEMP_PREFIX}writing", b"partial")
    restarted = make_harness(tmp_path)
    restarted.container.close()
    assert not stale.exists()
    assert fresh.exists()
    assert (here / "manifest.json").exists()
