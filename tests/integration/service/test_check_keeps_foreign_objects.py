"""`strongroom check --fix` removes a backup no row knows only when its manifest verifies
with this service's master key and belongs to a tenant: the service's own metadata backups
and another deployment's objects in a container a tenant's backup uses are kept, a real
orphan is still removed. Real service, real local store, real metadata."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import strongroom
from fixtures.service import make_harness
from strongroom.bootstrap import build_checker
from strongroom.domain.model import SERVICE_PROJECT
from strongroom.pipeline.keys import MasterKey
from strongroom.pipeline.reader import ChunkReader, open_manifest
from strongroom.pipeline.writer import BackupWriter
from strongroom.services import object_layout
from strongroom.storage.base import StorageBackend

SRC = Path(strongroom.__file__).resolve().parents[1]


def run_cli(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    """A separate `strongroom` process, as an operator runs it, on this same source tree."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["PYTHONPATH"] = str(SRC)
    return subprocess.run(
        [sys.executable, "-m", "strongroom", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def write_backup(
    store: StorageBackend, container: str, key: MasterKey, payload: bytes, *, manifest: bool
) -> str:
    """A backup in this service's layout, sealed with ``key`` (another deployment's)."""
    backup_id = str(uuid.uuid4())

    def emit(index: int, blob: bytes) -> None:
        store.put(object_layout.chunk_key(container, backup_id, index), blob)

    writer = BackupWriter(backup_id=backup_id, master_key=key, emit=emit, chunk_size=4096)
    writer.write(payload)
    writer.close()
    if manifest:
        written = writer.manifest(
            project_id="their-project",
            instance_id=str(uuid.uuid4()),
            datastore="sqlite",
            datastore_version="3",
            engine={},
            parent_id=None,
            parent_manifest_sha256=None,
            created=datetime.now(UTC).isoformat(),
        )
        store.put(object_layout.manifest_key(container, backup_id), written.to_bytes())
    return backup_id


def read_back(directory: Path, key: MasterKey) -> bytes:
    opened = open_manifest((directory / "manifest.json").read_bytes(), key)
    reader = ChunkReader(opened, lambda i: (directory / f"chunk-{i:08d}").read_bytes())
    try:
        return reader.read()
    finally:
        reader.close()


def test_check_fix_keeps_the_services_metadata_backup(tmp_path: Path) -> None:
    h = make_harness(tmp_path)
    data = h.settings.data_dir
    try:
        inst = h.a.wait_instance(h.a.create_instance()["id"])
        tenant = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
        done = run_cli("metadata", "backup", "--data-dir", data)
        assert done.returncode == 0, done.stderr
        backup_id, url = done.stdout.split()[:2]
    finally:
        h.container.close()
    here = data / "objects" / h.settings.default_container / backup_id
    before = files_of(here)
    assert "manifest.json" in before and len(before) > 1

    report = build_checker(h.settings).run(fix=True)

    assert report.removed_keys == [] and report.orphaned == {}
    assert report.metadata_backups == [
        f"local:{h.settings.default_container}/{backup_id}/manifest.json"
    ]
    assert files_of(here) == before
    # Expected objects: a later check is clean.
    again = run_cli("check", "--data-dir", data)
    assert again.returncode == 0, again.stdout + again.stderr
    # Still listed and restorable offline, with the master key alone.
    listed = run_cli("ls", "--from", url.rsplit("/", 2)[0], "--key", h.settings.key_file, "--json")
    assert listed.returncode == 0, listed.stderr
    assert {b["id"]: b["project"] for b in json.loads(listed.stdout)}[backup_id] == SERVICE_PROJECT
    target = tmp_path / "restored.db"
    back = run_cli("restore", "--from", url, "--key", h.settings.key_file, "--to", target)
    assert back.returncode == 0, back.stderr
    with sqlite3.connect(target) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("select id from backups").fetchall() == [(tenant["id"],)]


def test_check_fix_keeps_another_deployments_objects_in_a_tenants_container(
    tmp_path: Path,
) -> None:
    h = make_harness(tmp_path)
    data = h.settings.data_dir
    theirs = MasterKey.generate()
    payload = os.urandom(10_000)
    try:
        inst = h.a.wait_instance(h.a.create_instance()["id"])
        # A tenant's backup puts the container in the check's sweep.
        tenant = h.a.wait_backup(h.a.create_backup(inst["id"], swift_container="shared")["id"])
        store = h.container.stores.backend("local")
        complete = write_backup(store, "shared", theirs, payload, manifest=True)
        unfinished = write_backup(store, "shared", theirs, payload, manifest=False)
    finally:
        h.container.close()
    base = data / "objects" / "shared"
    kept = {bid: files_of(base / bid) for bid in (complete, unfinished, tenant["id"])}
    assert len(kept[complete]) == 4 and len(kept[unfinished]) == 3

    report = build_checker(h.settings).run(fix=True)

    assert report.removed_keys == [] and report.orphaned == {}
    assert sorted(report.unverified) == sorted(
        f"local:shared/{bid}/{name}" for bid in (complete, unfinished) for name in kept[bid]
    )
    assert "master key" in report.unverified[f"local:shared/{complete}/manifest.json"]
    assert "no manifest" in report.unverified[f"local:shared/{unfinished}/chunk-00000000"]
    assert {bid: files_of(base / bid) for bid in kept} == kept
    assert read_back(base / complete, theirs) == payload
    # The tenant's own backup is untouched and still restores.
    h = make_harness(tmp_path)
    try:
        r = h.a.post(
            "/instances",
            {"instance": {"name": "r", "restorePoint": {"backupRef": tenant["id"]}}},
        )
        assert r.status_code == 200, r.text
        h.a.wait_instance(r.json()["instance"]["id"])
    finally:
        h.container.close()


def test_check_fix_still_removes_the_objects_of_a_backup_no_row_knows(tmp_path: Path) -> None:
    h = make_harness(tmp_path)
    data = h.settings.data_dir
    try:
        inst = h.a.wait_instance(h.a.create_instance()["id"])
        kept = h.a.wait_backup(h.a.create_backup(inst["id"], "kept")["id"])
        lost = h.a.wait_backup(h.a.create_backup(inst["id"], "lost")["id"])
        with h.container.uow(write=True) as uow:  # a failed clean-up: objects, no row
            uow.backups.remove(lost["id"])
            uow.commit()
    finally:
        h.container.close()
    base = data / "objects" / h.settings.default_container
    names = sorted(files_of(base / lost["id"]))
    assert "manifest.json" in names and any(n.startswith("chunk-") for n in names)

    report = build_checker(h.settings).run(fix=True)

    keys = [f"{h.settings.default_container}/{lost['id']}/{n}" for n in names]
    assert report.orphaned == {"local": keys}
    assert sorted(report.removed_keys) == [f"local:{k}" for k in keys]
    assert not (base / lost["id"]).exists() or not any((base / lost["id"]).iterdir())
    assert (base / kept["id"] / "manifest.json").exists()
    assert run_cli("check", "--data-dir", data).returncode == 0
