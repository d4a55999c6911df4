"""`strongroom catalog rebuild`: backups taken through the service (two projects, full and
incremental chains), the metadata database deleted, the catalog rebuilt from the store
with the master key; then the API lists, shows, restores (row for row) and deletes every
backup as before, a second rebuild changes nothing, a tampered manifest is skipped and
the service's own metadata backup is not imported as a tenant's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from recovery_support import (
    Taken,
    restore_and_read,
    run,
    stop_and_forget,
    table_rows,
    take_sqlite_chain,
    write_config,
)

from fixtures.service import make_harness, wait_for
from strongroom.offline.metadata_backup import backup_metadata
from strongroom.pipeline.keys import MasterKey
from strongroom.storage.config import LocalStoreConfig
from strongroom.storage.registry import build_backend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TABLES = ("backups", "instances", "quota_usages", "datastore_versions")


def test_catalog_rebuild_after_losing_the_metadata(tmp_path: Path) -> None:
    h = make_harness(tmp_path, chunk_size=64 * 1024)
    taken = Taken()
    take_sqlite_chain(h, "a", "app", taken, links=3)
    take_sqlite_chain(h, "b", "other", taken, links=1)
    take_sqlite_chain(h, "a", "victim", taken, links=1)
    before = {
        b["id"]: h.callers[taken.owner[b["id"]]].get(f"/backups/{b['id']}").json()["backup"]
        for b in taken.backups.values()
    }
    data = h.settings.data_dir
    objects = data / "objects" / "database-backups"
    stop_and_forget(h)
    # The service's own metadata backup lies in the same container: never a tenant's.
    meta_db = tmp_path / "meta.db"
    meta_db.write_bytes(b"")
    local = build_backend(LocalStoreConfig(name="local", root=data / "objects"))
    own = backup_metadata(
        _empty_database(meta_db),
        data_dir=data,
        store=local,
        container="database-backups",
        master_key=MasterKey.load(h.settings.key_file),
    )
    # Someone edits one manifest: it no longer verifies, so it is not imported.
    victim = taken.backups["victim-0"]["id"]
    manifest = objects / victim / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["project_id"] = "projb"
    manifest.write_text(json.dumps(doc))

    config = write_config(tmp_path / "strongroom.toml", data)
    first = run("catalog", "rebuild", "--store", "local", "--config", config)
    assert first.returncode == 1, first.stderr  # one manifest skipped
    assert f"skipped local:database-backups/{victim}/manifest.json" in first.stdout
    assert "MAC does not verify" in first.stdout
    assert f"not imported: {own.backup_id} is the service's own metadata backup" in first.stdout
    assert "imported 4 backups and 2 detached instances" in first.stdout
    rebuilt = table_rows(data / "strongroom.db", *TABLES)

    again = run("catalog", "rebuild", "--store", "local", "--config", config)
    assert "imported 0 backups and 0 detached instances" in again.stdout, again.stdout
    assert "4 were already recorded" in again.stdout
    assert table_rows(data / "strongroom.db", *TABLES) == rebuilt

    h2 = make_harness(tmp_path, chunk_size=64 * 1024)
    try:
        listed_a = {b["id"] for b in h2.a.get("/backups").json()["backups"]}
        listed_b = {b["id"] for b in h2.b.get("/backups").json()["backups"]}
        kept = {bid for bid in before if bid != victim}
        assert listed_a == {bid for bid in kept if taken.owner[bid] == "a"}
        assert listed_b == {bid for bid in kept if taken.owner[bid] == "b"}
        assert own.backup_id not in listed_a | listed_b
        assert h2.admin.get(f"/backups/{own.backup_id}").status_code == 404
        for bid in kept:
            caller = h2.callers[taken.owner[bid]]
            shown = caller.get(f"/backups/{bid}").json()["backup"]
            for name in ("status", "parent_id", "instance_id", "locationRef", "datastore"):
                assert shown[name] == before[bid][name], (bid, name)
            assert shown["size"] > 0
            # Another project sees nothing of it.
            other = h2.b if taken.owner[bid] == "a" else h2.a
            assert other.get(f"/backups/{bid}").status_code == 404
            assert restore_and_read(caller, bid) == taken.expected[bid]

        app = taken.instances["app"]
        detached = h2.a.get(f"/instances/{app}").json()["instance"]
        assert detached["status"] == "DETACHED"
        assert h2.b.get(f"/instances/{app}").status_code == 404
        refused = h2.a.post("/backups", {"backup": {"name": "no", "instance": app}})
        assert refused.status_code == 422, refused.text
        assert "DETACHED" in refused.json()["unprocessableEntity"]["message"]

        newest = taken.backups["app-2"]["id"]
        assert h2.a.delete(f"/backups/{newest}").status_code == 202
        wait_for(lambda: h2.a.get(f"/backups/{newest}").status_code == 404)
        wait_for(lambda: not (objects / newest).exists())
        assert h2.a.delete(f"/instances/{app}").status_code == 202
        wait_for(lambda: h2.a.get(f"/instances/{app}").status_code == 404)
        assert h2.a.get(f"/backups/{taken.backups['app-1']['id']}").status_code == 200
    finally:
        h2.container.close()


def _empty_database(path: Path) -> Path:
    import sqlite3

    path.unlink()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE service (k TEXT)")
    return path


def test_catalog_rebuild_refuses_a_container_outside_the_store(tmp_path: Path) -> None:
    h = make_harness(tmp_path)
    h.container.close()
    config = write_config(tmp_path / "strongroom.toml", h.settings.data_dir)
    for container in ("..", "../data", "a/../../b"):
        refused = run(
            "catalog", "rebuild", "--store", "local", "--container", container, "--config", config
        )
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "is not a container of store 'local'" in refused.stdout
        assert "Traceback" not in refused.stderr
    unknown = run("catalog", "rebuild", "--store", "nowhere", "--config", config)
    assert unknown.returncode == 2 and "no store named 'nowhere'" in unknown.stderr
