"""Copies of backups in a second store (two real local stores, real SQLite instances):
copy, verify, restore from the copy when the primary store is gone or damaged, delete,
and the requests that must be refused."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.service import Caller, Harness, make_harness, wait_for
from strongroom.bootstrap import build_checker
from strongroom.pipeline.reader import open_manifest
from support.dashboard import browser, sign_in

QUERY = "select id, body from notes order by id"
CONTAINER = "primary-c"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = make_harness(
        tmp_path,
        stores=[
            {"name": "local", "kind": "local", "root": str(tmp_path / "primary")},
            {"name": "offsite", "kind": "local", "root": str(tmp_path / "offsite")},
            # Another name for the primary's own directory: not a second store.
            {"name": "alias", "kind": "local", "root": str(tmp_path / "primary")},
        ],
        default_store="local",
        default_container=CONTAINER,
        chunk_size=64 * 1024,
    )
    try:
        yield harness
    finally:
        harness.container.close()


def write_rows(path: str, start: int, count: int) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        db.execute("create table if not exists notes(id integer primary key, body text)")
        db.executemany(
            "insert into notes values (?, ?)",
            [(i, os.urandom(64).hex()) for i in range(start, start + count)],
        )
        return db.execute(QUERY).fetchall()


def chain(h: Harness) -> tuple[dict[str, Any], dict[str, Any], list[tuple[Any, ...]]]:
    """A full backup and an incremental on it; the rows the incremental holds."""
    inst = h.a.create_instance("src")
    path = h.a.wait_instance(inst["id"])["connection"]["path"]
    write_rows(path, 0, 3000)
    full = h.a.wait_backup(h.a.create_backup(inst["id"], "full")["id"])
    rows = write_rows(path, 3000, 300)
    incr = h.a.wait_backup(h.a.create_backup(inst["id"], "incr", incremental=1)["id"])
    assert incr["parent_id"] == full["id"]
    return full, incr, rows


def copy(caller: Caller, backup_id: str, **spec: Any) -> Any:
    return caller.post(f"/backups/{backup_id}/copy", {"copy": spec})


def copy_in(caller: Caller, backup_id: str, store: str) -> dict[str, Any] | None:
    backup = caller.get(f"/backups/{backup_id}").json()["backup"]
    return next((c for c in backup["copies"] if c["storage_driver"] == store), None)


def wait_copy(caller: Caller, backup_id: str, store: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        found = copy_in(caller, backup_id, store)
        return found if found and found["state"] in ("COMPLETED", "FAILED") else None

    result: dict[str, Any] = wait_for(done)
    return result


def restore(caller: Caller, backup_id: str) -> dict[str, Any]:
    body = {"instance": {"name": "r", "flavorRef": "1", "restorePoint": {"backupRef": backup_id}}}
    r = caller.post("/instances", body)
    assert r.status_code == 200, r.text
    return caller.wait_instance(r.json()["instance"]["id"])


def rows_of(instance: dict[str, Any]) -> list[tuple[Any, ...]]:
    with sqlite3.connect(instance["connection"]["path"]) as db:
        return db.execute(QUERY).fetchall()


def objects(root: Path, backup_id: str) -> dict[str, bytes]:
    found = {}
    for path in sorted(root.rglob(f"{backup_id}/*")):
        found[path.name] = path.read_bytes()
    return found


def test_copy_of_an_incremental_copies_its_chain_and_verifies_it(h: Harness, tmp_path: Path):
    full, incr, _ = chain(h)
    assert h.a.get(f"/backups/{full['id']}").json()["backup"]["copies"] == []
    r = copy(h.a, incr["id"], storage_driver="offsite", swift_container="far")
    assert r.status_code == 202, r.text
    assert r.json()["backup"]["copies"][0]["state"] == "COPYING"
    done = wait_copy(h.a, incr["id"], "offsite")
    assert done["state"] == "COMPLETED", done
    assert done["verified_at"] is not None
    assert done["location_ref"] == (f"file://{tmp_path / 'offsite'}/far/{incr['id']}/manifest.json")
    parent_copy = copy_in(h.a, full["id"], "offsite")
    assert parent_copy is not None and parent_copy["state"] == "COMPLETED"
    # Byte for byte: the same sealed objects, not sealed again.
    for backup in (full, incr):
        primary = objects(tmp_path / "primary" / CONTAINER, backup["id"])
        assert primary and objects(tmp_path / "offsite" / "far", backup["id"]) == primary
    # The list shows copies too.
    listed = {b["id"]: b for b in h.a.get("/backups").json()["backups"]}
    assert listed[incr["id"]]["copies"][0]["storage_driver"] == "offsite"


def test_the_dashboard_shows_each_backups_copies_to_its_own_project_only(h: Harness):
    full, incr, _ = chain(h)
    assert copy(h.a, incr["id"], storage_driver="offsite").status_code == 202
    assert wait_copy(h.a, incr["id"], "offsite")["state"] == "COMPLETED"
    page = sign_in(browser(h), h.a.token).get("/dashboard").text
    for backup in (full, incr):
        node = page[page.index(f'data-backup-id="{backup["id"]}"') :]
        node = node[: node.index("</div>")]
        assert "copy in offsite: COMPLETED, verified" in node, node
    other = sign_in(browser(h), h.b.token).get("/dashboard").text
    assert "copy in offsite" not in other and incr["id"] not in other


def test_primary_store_gone_restore_comes_from_the_copy(h: Harness, tmp_path: Path):
    _, incr, rows = chain(h)
    assert copy(h.a, incr["id"], storage_driver="offsite").status_code == 202
    assert wait_copy(h.a, incr["id"], "offsite")["state"] == "COMPLETED"
    # The primary store loses everything (the service runs as root: a rename, not chmod).
    shutil.move(tmp_path / "primary" / CONTAINER, tmp_path / "lost")
    restored = restore(h.a, incr["id"])
    assert rows_of(restored) == rows
    message = restored["fault"]["message"]
    assert "copy" in message and "'offsite'" in message and incr["id"] in message


def test_damaged_chunk_restore_comes_from_the_copy(h: Harness, tmp_path: Path):
    full, incr, rows = chain(h)
    assert copy(h.a, incr["id"], storage_driver="offsite").status_code == 202
    assert wait_copy(h.a, incr["id"], "offsite")["state"] == "COMPLETED"
    chunk = sorted((tmp_path / "primary" / CONTAINER / full["id"]).glob("chunk-*"))[1]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    restored = restore(h.a, incr["id"])
    assert rows_of(restored) == rows
    assert "offsite" in restored["fault"]["message"]
    assert "chunk" in restored["fault"]["message"].lower()


def test_without_a_copy_a_damaged_chunk_still_fails_the_restore(h: Harness, tmp_path: Path):
    full, _, _ = chain(h)
    chunk = sorted((tmp_path / "primary" / CONTAINER / full["id"]).glob("chunk-*"))[0]
    chunk.write_bytes(os.urandom(chunk.stat().st_size))
    body = {"instance": {"name": "r", "flavorRef": "1", "restorePoint": {"backupRef": full["id"]}}}
    r = h.a.post("/instances", body)
    failed = h.a.wait_instance(r.json()["instance"]["id"], "ERROR")
    assert "chunk" in failed["fault"]["message"].lower()


def test_a_damaged_source_gives_a_failed_copy_with_its_reason(h: Harness, tmp_path: Path):
    full, _, _ = chain(h)
    chunk = sorted((tmp_path / "primary" / CONTAINER / full["id"]).glob("chunk-*"))[0]
    chunk.write_bytes(os.urandom(chunk.stat().st_size))
    assert copy(h.a, full["id"], storage_driver="offsite").status_code == 202
    failed = wait_copy(h.a, full["id"], "offsite")
    assert failed["state"] == "FAILED"
    assert "chunk" in failed["error"].lower()
    # A failed copy is asked for again (and fails again, honestly).
    assert copy(h.a, full["id"], storage_driver="offsite").status_code == 202


def test_deleting_a_backup_deletes_its_copies(h: Harness, tmp_path: Path):
    full, incr, _ = chain(h)
    assert copy(h.a, incr["id"], storage_driver="offsite").status_code == 202
    wait_copy(h.a, incr["id"], "offsite")
    assert objects(tmp_path / "offsite" / CONTAINER, full["id"])
    assert h.a.delete(f"/backups/{full['id']}").status_code == 202
    h.wait_idle()
    assert objects(tmp_path / "offsite" / CONTAINER, full["id"]) == {}
    assert objects(tmp_path / "offsite" / CONTAINER, incr["id"]) == {}
    assert h.a.get(f"/backups/{full['id']}").status_code == 404


def test_requests_that_are_refused(h: Harness):
    full, _, _ = chain(h)
    path = f"/backups/{full['id']}/copy"
    # Another project's backup does not exist for the caller.
    assert h.b.post(path, {"copy": {"storage_driver": "offsite"}}).status_code == 404
    assert h.b.post(path, {"copy": {"storage_driver": "nowhere"}}).status_code == 404
    unknown = copy(h.a, full["id"], storage_driver="nowhere")
    assert unknown.status_code == 400 and "nowhere" in unknown.text
    same = copy(h.a, full["id"], storage_driver="local")
    assert same.status_code == 400 and "another store" in same.text
    alias = copy(h.a, full["id"], storage_driver="alias")
    assert alias.status_code == 400, alias.text
    for container in ("..", "a/b", "x\u0000"):
        r = copy(h.a, full["id"], storage_driver="offsite", swift_container=container)
        assert r.status_code == 400, (container, r.text)
    assert h.a.post(path, {"copy": {}}).status_code == 400
    assert h.a.post(path, {"copy": {"storage_driver": "offsite", "x": 1}}).status_code == 400
    assert h.a.post(path, {}).status_code == 400
    missing = h.a.post(
        "/backups/00000000-0000-0000-0000-000000000000/copy",
        {"copy": {"storage_driver": "offsite"}},
    )
    assert missing.status_code == 404
    # Nothing was copied by any of these.
    assert h.a.get(f"/backups/{full['id']}").json()["backup"]["copies"] == []
    # Twice into one store: the second is refused while the first stands.
    assert copy(h.a, full["id"], storage_driver="offsite").status_code == 202
    again = copy(h.a, full["id"], storage_driver="offsite")
    assert again.status_code == 422, again.text


def test_a_project_has_at_most_two_copies_queued_or_running(h: Harness) -> None:
    inst = h.a.create_instance("src")
    write_rows(h.a.wait_instance(inst["id"])["connection"]["path"], 0, 100)
    mine = [h.a.wait_backup(h.a.create_backup(inst["id"], f"b{i}")["id"]) for i in range(3)]
    theirs = h.b.create_instance("src")
    h.b.wait_instance(theirs["id"])
    other = h.b.wait_backup(h.b.create_backup(theirs["id"], "b")["id"])
    h.container.queue.hold()  # the copies stay queued
    try:
        codes = [copy(h.a, b["id"], storage_driver="offsite").status_code for b in mine]
        assert codes == [202, 202, 413], codes
        refused = copy(h.a, mine[2]["id"], storage_driver="offsite")
        assert refused.status_code == 413 and "at most 2 at a time" in refused.text
        # Another project has its own room.
        assert copy(h.b, other["id"], storage_driver="offsite").status_code == 202
    finally:
        h.container.queue.release()
    wait_copy(h.a, mine[0]["id"], "offsite")
    wait_copy(h.a, mine[1]["id"], "offsite")
    h.wait_idle()
    # Once they have finished, there is room again.
    assert copy(h.a, mine[2]["id"], storage_driver="offsite").status_code == 202
    assert wait_copy(h.a, mine[2]["id"], "offsite")["state"] == "COMPLETED"


def test_a_copy_into_another_projects_container_touches_only_its_own_keys(
    h: Harness, tmp_path: Path
):
    # Project B keeps its backups in container "shared" of the offsite store.
    inst_b = h.b.create_instance("b")
    write_rows(h.b.wait_instance(inst_b["id"])["connection"]["path"], 0, 500)
    b_backup = h.b.wait_backup(
        h.b.create_backup(inst_b["id"], "b", storage_driver="offsite", swift_container="shared")[
            "id"
        ]
    )
    before = objects(tmp_path / "offsite" / "shared", b_backup["id"])
    full, _, _ = chain(h)
    r = copy(h.a, full["id"], storage_driver="offsite", swift_container="shared")
    assert r.status_code == 202
    assert wait_copy(h.a, full["id"], "offsite")["state"] == "COMPLETED"
    assert objects(tmp_path / "offsite" / "shared", b_backup["id"]) == before
    # The copy is A's backup under A's id, sealed for A, and nothing else appeared.
    names = {p.name for p in (tmp_path / "offsite" / "shared").iterdir()}
    assert names == {b_backup["id"], full["id"]}
    manifest = (tmp_path / "offsite" / "shared" / full["id"] / "manifest.json").read_bytes()
    opened = open_manifest(manifest, h.container.stores.master_key)
    assert opened.manifest.project_id == "proja" and opened.manifest.backup_id == full["id"]
    # B cannot copy A's backup over its own container either, nor see A's copy.
    assert copy(h.b, full["id"], storage_driver="offsite").status_code == 404
    assert h.b.get(f"/backups/{full['id']}").status_code == 404


def test_check_looks_into_copy_containers_and_keeps_the_copies(h: Harness, tmp_path: Path):
    full, _, _ = chain(h)
    assert copy(h.a, full["id"], storage_driver="offsite", swift_container="far").status_code == 202
    assert wait_copy(h.a, full["id"], "offsite")["state"] == "COMPLETED"
    orphan = tmp_path / "offsite" / "far" / str(uuid.uuid4())
    orphan.mkdir()
    (orphan / "chunk-00000000").write_bytes(b"left over")
    report = build_checker(h.settings).run(fix=True)
    assert report.orphaned == {} and report.removed_keys == []
    assert list(report.unverified) == [f"offsite:far/{orphan.name}/chunk-00000000"]
    assert report.missing_manifests == []
    assert (orphan / "chunk-00000000").exists()


def test_a_chain_is_copied_into_one_container(h: Harness, tmp_path: Path):
    full, incr, _ = chain(h)
    assert copy(h.a, full["id"], storage_driver="offsite", swift_container="one").status_code == 202
    assert wait_copy(h.a, full["id"], "offsite")["state"] == "COMPLETED"
    elsewhere = copy(h.a, incr["id"], storage_driver="offsite", swift_container="two")
    assert elsewhere.status_code == 400 and "'one'" in elsewhere.text
    # Without a container the incremental goes beside its parent's copy.
    assert copy(h.a, incr["id"], storage_driver="offsite").status_code == 202
    done = wait_copy(h.a, incr["id"], "offsite")
    assert done["state"] == "COMPLETED"
    assert (tmp_path / "offsite" / "one" / incr["id"] / "manifest.json").exists()
    assert not (tmp_path / "offsite" / "two").exists()


def test_the_offline_restore_reads_a_copy_alone(h: Harness, tmp_path: Path):
    _, incr, rows = chain(h)
    assert copy(h.a, incr["id"], storage_driver="offsite", swift_container="far").status_code == 202
    location = wait_copy(h.a, incr["id"], "offsite")["location_ref"]
    shutil.rmtree(tmp_path / "primary")
    target = tmp_path / "restored.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    command = ["restore", "--from", location, "--key", str(h.settings.key_file)]
    done = subprocess.run(
        [sys.executable, "-m", "strongroom", *command, "--to", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(target) as db:
        assert db.execute(QUERY).fetchall() == rows


def test_key_rotation_rewrites_the_copies_and_a_restore_from_a_copy_still_works(
    tmp_path: Path,
):
    from strongroom.bootstrap import build_recovery
    from strongroom.offline.recovery_commands import _targets
    from strongroom.offline.rotation import rotate
    from strongroom.pipeline.errors import FormatError
    from strongroom.pipeline.keys import MasterKey

    stores = [
        {"name": "local", "kind": "local", "root": str(tmp_path / "primary")},
        {"name": "offsite", "kind": "local", "root": str(tmp_path / "offsite")},
    ]
    settings = {"stores": stores, "default_store": "local", "default_container": CONTAINER}
    h = make_harness(tmp_path, chunk_size=64 * 1024, **settings)
    try:
        full, incr, rows = chain(h)
        # A container of its own there: one no backup of the primary store uses.
        spec = {"storage_driver": "offsite", "swift_container": "offsite-c"}
        assert copy(h.a, incr["id"], **spec).status_code == 202
        assert wait_copy(h.a, incr["id"], "offsite")["state"] == "COMPLETED"
    finally:
        h.container.close()
    old = MasterKey.load(h.settings.key_file)
    sessions, uow, catalog = build_recovery(h.settings, old)
    try:
        report = rotate(
            key_file=h.settings.key_file,
            stores=_targets(uow, catalog, h.settings, []),
            sessions=sessions,
        )
    finally:
        catalog.close()
    assert report.finished and not report.problems, report.problems
    new = MasterKey.load(h.settings.key_file)
    for backup in (full, incr):
        raw = (tmp_path / "offsite" / "offsite-c" / backup["id"] / "manifest.json").read_bytes()
        open_manifest(raw, new, expected_backup_id=backup["id"])
        with pytest.raises(FormatError):
            open_manifest(raw, old, expected_backup_id=backup["id"])
    # The primary store loses everything: the copy, under the new key, is what restores.
    again = make_harness(tmp_path, chunk_size=64 * 1024, **settings)
    try:
        shutil.move(tmp_path / "primary" / CONTAINER, tmp_path / "lost")
        restored = restore(again.a, incr["id"])
        assert rows_of(restored) == rows
        assert "'offsite'" in restored["fault"]["message"]
    finally:
        again.container.close()
