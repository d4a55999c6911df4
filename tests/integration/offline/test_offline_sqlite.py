"""Offline restore and listing of SQLite backups: backed up through the service (full and
incremental), the service stopped and its metadata deleted, then rebuilt from the store
with the key alone and compared row for row."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from offline_support import lose_the_service, strongroom

from fixtures.service import Harness, make_harness
from strongroom.pipeline.keys import MasterKey

pytestmark = pytest.mark.integration


def fill(path: Path, first: int, last: int) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
        db.executemany(
            "INSERT INTO t VALUES (?, ?)",
            [(i, f"row {i} " + "x" * 300) for i in range(first, last)],
        )


def rows(path: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(db.execute("SELECT * FROM t ORDER BY id"))
    finally:
        db.close()


@pytest.fixture
def backed_up(tmp_path: Path) -> dict[str, Any]:
    """A full and an incremental backup of an external SQLite file, then the service gone."""
    h: Harness = make_harness(tmp_path)
    db = tmp_path / "external" / "app.db"
    fill(db, 0, 2000)
    inst = h.a.create_instance("app", external={"path": str(db)})
    inst = h.a.wait_instance(inst["id"])
    full = h.a.wait_backup(h.a.create_backup(inst["id"], "full")["id"])
    fill(db, 2000, 2500)
    with sqlite3.connect(db) as c:
        c.execute("UPDATE t SET v = 'changed' WHERE id % 7 = 0")
    incr = h.a.wait_backup(h.a.create_backup(inst["id"], "incr", incremental=1)["id"])
    key = lose_the_service(h)
    return {"db": db, "full": full, "incr": incr, "key": key, "expected": rows(db), "h": h}


def test_offline_restore_sqlite_chain_equals_the_source(
    backed_up: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "restored.db"
    done = strongroom(
        "restore",
        "--from",
        backed_up["incr"]["locationRef"],
        "--key",
        backed_up["key"],
        "--to",
        target,
    )
    assert done.returncode == 0, done.stderr
    assert "2 links" in done.stdout
    assert rows(target) == backed_up["expected"]
    assert target.stat().st_mode & 0o777 == 0o600
    assert sqlite3.connect(target).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_offline_restore_sqlite_full_alone(backed_up: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "empty-dir"
    target.mkdir()
    done = strongroom(
        "restore",
        "--from",
        backed_up["full"]["locationRef"],
        "--key",
        backed_up["key"],
        "--to",
        target,
    )
    assert done.returncode == 0, done.stderr
    assert [r[0] for r in rows(target / "database.sqlite")] == list(range(2000))


def test_offline_restore_refuses_a_tampered_chunk_and_leaves_the_target_empty(
    backed_up: dict[str, Any], tmp_path: Path
) -> None:
    manifest = Path(backed_up["full"]["locationRef"].removeprefix("file://"))
    chunk = manifest.parent / "chunk-00000000"
    blob = bytearray(chunk.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    chunk.write_bytes(bytes(blob))
    target = tmp_path / "out"
    target.mkdir()
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
    assert "restore refused" in done.stderr
    assert f"backup {backed_up['full']['id']}" in done.stderr and "chunk 0" in done.stderr
    assert list(target.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir() if "strongroom-restore" in p.name] == []


def test_offline_restore_refuses_an_edited_parent_manifest(
    backed_up: dict[str, Any], tmp_path: Path
) -> None:
    manifest = Path(backed_up["full"]["locationRef"].removeprefix("file://"))
    manifest.write_bytes(manifest.read_bytes().replace(b'"created": "', b'"created": "1'))
    done = strongroom(
        "restore",
        "--from",
        backed_up["incr"]["locationRef"],
        "--key",
        backed_up["key"],
        "--to",
        tmp_path / "out.db",
    )
    assert done.returncode == 1
    assert "restore refused" in done.stderr
    assert not (tmp_path / "out.db").exists()


def test_offline_restore_refuses_a_wrong_key(backed_up: dict[str, Any], tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    other.write_text(MasterKey.generate().to_base64() + "\n")
    done = strongroom(
        "restore",
        "--from",
        backed_up["incr"]["locationRef"],
        "--key",
        other,
        "--to",
        tmp_path / "out.db",
    )
    assert done.returncode == 1
    assert "encrypted with master key" in done.stderr
    assert not (tmp_path / "out.db").exists()


def test_offline_restore_refuses_a_non_empty_target(
    backed_up: dict[str, Any], tmp_path: Path
) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep").write_text("mine")
    existing = tmp_path / "existing.db"
    existing.write_text("mine")
    for target in (busy, existing):
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
        assert "restore refused" in done.stderr
    assert (busy / "keep").read_text() == "mine" and existing.read_text() == "mine"
    assert sorted(p.name for p in busy.iterdir()) == ["keep"]


def test_offline_restore_with_the_sealed_key(backed_up: dict[str, Any], tmp_path: Path) -> None:
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("correct horse battery staple\n")
    sealed = tmp_path / "sealed.key"
    done = strongroom(
        "key",
        "export",
        "--key",
        backed_up["key"],
        "--passphrase-file",
        passphrase,
        "--out",
        sealed,
    )
    assert done.returncode == 0, done.stderr
    assert sealed.stat().st_mode & 0o777 == 0o600
    assert MasterKey.load(backed_up["key"]).to_base64() not in sealed.read_text()
    wrong = tmp_path / "wrong"
    wrong.write_text("correct horse battery stapler\n")
    url = backed_up["incr"]["locationRef"]
    refused = strongroom(
        "restore",
        "--from",
        url,
        "--key",
        sealed,
        "--passphrase-file",
        wrong,
        "--to",
        tmp_path / "a.db",
    )
    assert refused.returncode == 1
    assert "passphrase does not open" in refused.stderr
    asked = strongroom("restore", "--from", url, "--key", sealed, "--to", tmp_path / "a.db")
    assert asked.returncode == 1 and "--passphrase-file" in asked.stderr
    assert not (tmp_path / "a.db").exists()
    done = strongroom(
        "restore",
        "--from",
        url,
        "--key",
        sealed,
        "--passphrase-file",
        passphrase,
        "--to",
        tmp_path / "a.db",
    )
    assert done.returncode == 0, done.stderr
    assert rows(tmp_path / "a.db") == backed_up["expected"]
    again = strongroom(
        "key",
        "export",
        "--key",
        backed_up["key"],
        "--passphrase-file",
        passphrase,
        "--out",
        sealed,
    )
    assert again.returncode == 1  # never overwrites


def test_ls_lists_the_container_from_its_manifests(backed_up: dict[str, Any]) -> None:
    manifest = Path(backed_up["full"]["locationRef"].removeprefix("file://"))
    container_url = "file://" + str(manifest.parent.parent)
    done = strongroom("ls", "--from", container_url, "--key", backed_up["key"], "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert [b["id"] for b in listed] == [backed_up["full"]["id"], backed_up["incr"]["id"]]
    full, incr = listed
    assert full["project"] == "proja" and full["datastore"] == "sqlite"
    assert full["parent"] is None and incr["parent"] == backed_up["full"]["id"]
    assert incr["location"] == backed_up["incr"]["locationRef"]
    assert full["size"] > 2000 * 300
    table = strongroom("ls", "--from", container_url, "--key", backed_up["key"])
    assert table.returncode == 0 and backed_up["incr"]["id"] in table.stdout
    # A manifest that does not verify is shown as such, and the exit status says so.
    manifest.write_bytes(manifest.read_bytes().replace(b'"proja"', b'"projb"'))
    flagged = strongroom("ls", "--from", container_url, "--key", backed_up["key"], "--json")
    assert flagged.returncode == 1
    problems = {b["id"]: b["problem"] for b in json.loads(flagged.stdout)}
    assert problems[backed_up["full"]["id"]] and problems[backed_up["incr"]["id"]] is None


def test_offline_restore_refuses_a_manifest_moved_to_another_backup_id(
    backed_up: dict[str, Any], tmp_path: Path
) -> None:
    """A backup's objects copied under another id (as if they were that backup's) are
    refused: the manifest's backup id is checked against its place in the store."""
    source = Path(backed_up["full"]["locationRef"].removeprefix("file://")).parent
    impostor = source.parent / str(uuid.uuid4())
    shutil.copytree(source, impostor)
    done = strongroom(
        "restore",
        "--from",
        "file://" + str(impostor / "manifest.json"),
        "--key",
        backed_up["key"],
        "--to",
        tmp_path / "out.db",
    )
    assert done.returncode == 1
    assert f"expected backup {impostor.name}" in done.stderr
    assert not (tmp_path / "out.db").exists()


def test_offline_restore_refuses_chunks_swapped_or_missing(
    backed_up: dict[str, Any], tmp_path: Path
) -> None:
    full_dir = Path(backed_up["full"]["locationRef"].removeprefix("file://")).parent
    incr_dir = Path(backed_up["incr"]["locationRef"].removeprefix("file://")).parent
    url = backed_up["incr"]["locationRef"]
    own = (incr_dir / "chunk-00000000").read_bytes()
    (incr_dir / "chunk-00000000").write_bytes((full_dir / "chunk-00000000").read_bytes())
    swapped = strongroom(
        "restore", "--from", url, "--key", backed_up["key"], "--to", tmp_path / "a.db"
    )
    assert swapped.returncode == 1 and "chunk 0" in swapped.stderr, swapped.stderr
    (incr_dir / "chunk-00000000").write_bytes(own)
    (full_dir / "chunk-00000000").unlink()
    missing = strongroom(
        "restore", "--from", url, "--key", backed_up["key"], "--to", tmp_path / "a.db"
    )
    assert missing.returncode == 1 and "missing" in missing.stderr.lower(), missing.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("a.db", ".a.db"))) == []


def test_offline_restore_refuses_a_link_as_target(
    backed_up: dict[str, Any], tmp_path: Path
) -> None:
    """A target that is a symbolic link (to an empty directory, or to a file to be
    overwritten) is refused and what it points to is untouched."""
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    for name, points_to in (
        ("to-dir", empty),
        ("to-file", victim),
        ("dangling", tmp_path / "nothing"),
    ):
        link = tmp_path / name
        link.symlink_to(points_to)
        done = strongroom(
            "restore",
            "--from",
            backed_up["incr"]["locationRef"],
            "--key",
            backed_up["key"],
            "--to",
            link,
        )
        assert done.returncode == 1, name
        assert "restore refused" in done.stderr
    assert list(empty.iterdir()) == [] and victim.read_text() == "keep me"
    assert not (tmp_path / "nothing").exists()


def test_ls_flags_a_backup_of_another_master_key(backed_up: dict[str, Any], tmp_path: Path) -> None:
    manifest = Path(backed_up["full"]["locationRef"].removeprefix("file://"))
    container_url = "file://" + str(manifest.parent.parent)
    other = tmp_path / "other.key"
    other.write_text(MasterKey.generate().to_base64() + "\n")
    done = strongroom("ls", "--from", container_url, "--key", other, "--json")
    assert done.returncode == 1
    listed = json.loads(done.stdout)
    assert len(listed) == 2 and all("encrypted with master key" in b["problem"] for b in listed)
    assert all(b["project"] is None for b in listed)  # nothing unverified is shown


@pytest.mark.skipif(os.geteuid() != 0, reason="the place is checked when root restores")
@pytest.mark.parametrize("where", ["file", "empty-dir", "below"])
def test_offline_restore_refuses_a_place_another_user_can_change(
    backed_up: dict[str, Any], tmp_path: Path, where: str
) -> None:
    """Root writes the target by name and gives it away: under a directory another user
    owns (a tenant's instance home), that user could swap names meanwhile."""
    nobody = pwd.getpwnam("nobody")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    target = {"file": theirs / "x.db", "empty-dir": theirs, "below": theirs / "a" / "x.db"}[where]
    target.parent.mkdir(exist_ok=True)
    done = strongroom(
        "restore",
        "--from",
        backed_up["full"]["locationRef"],
        "--key",
        backed_up["key"],
        "--to",
        target,
    )
    assert done.returncode != 0
    assert "is not root's alone" in done.stderr and str(theirs) in done.stderr
    assert sorted(p.name for p in theirs.rglob("*")) == (["a"] if where == "below" else [])
