"""`strongroom check` finds objects no backup refers to, and `--fix` removes only those."""

import sqlite3
import subprocess
import sys
import uuid

from fixtures.service import make_harness


def check(data_dir, *extra):
    return subprocess.run(
        [sys.executable, "-m", "strongroom", "check", "--data-dir", str(data_dir), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "STRONGROOM_DATASTORES": '["sqlite"]'},
    )


def test_check_reports_and_removes_orphans_only(tmp_path):
    h = make_harness(tmp_path)
    try:
        inst = h.a.create_instance()
        h.a.wait_instance(inst["id"])
        kept = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
        lost = h.a.wait_backup(h.a.create_backup(inst["id"], "lost")["id"])
    finally:
        h.container.close()
    data = h.settings.data_dir
    base = data / "objects" / "database-backups"
    clean = check(data)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "consistent" in clean.stdout

    # A failed clean-up: the objects stay, the row is gone.
    with sqlite3.connect(data / "strongroom.db") as db:
        db.execute("delete from backups where id = ?", (lost["id"],))
    lost_keys = sorted(
        f"database-backups/{lost['id']}/{p.name}" for p in (base / lost["id"]).iterdir()
    )
    # Chunks without a manifest cannot be proven the service's: reported, never removed.
    unproven = base / str(uuid.uuid4())
    unproven.mkdir(parents=True)
    (unproven / "chunk-00000000").write_bytes(b"left over")
    found = check(data)
    assert found.returncode == 1
    assert [f"orphaned object: local:{k}" for k in lost_keys] == [
        line for line in found.stdout.splitlines() if line.startswith("orphaned object: ")
    ]
    unproven_key = f"local:database-backups/{unproven.name}/chunk-00000000"
    assert f"kept, not verified as this service's: {unproven_key}" in found.stdout
    assert kept["id"] not in found.stdout

    fixed = check(data, "--fix")
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr  # the unverified chunk is left
    assert f"removed {len(lost_keys)} orphaned objects" in fixed.stdout
    assert not (base / lost["id"]).exists() or not any((base / lost["id"]).iterdir())
    assert (unproven / "chunk-00000000").exists()
    assert (base / kept["id"] / "manifest.json").exists()
    (unproven / "chunk-00000000").unlink()
    assert check(data).returncode == 0


def test_check_reports_a_completed_backup_without_manifest(tmp_path):
    h = make_harness(tmp_path)
    try:
        inst = h.a.create_instance()
        h.a.wait_instance(inst["id"])
        backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
    finally:
        h.container.close()
    manifest = h.settings.data_dir / "objects" / "database-backups" / backup["id"] / "manifest.json"
    manifest.unlink()
    out = check(h.settings.data_dir)
    assert out.returncode == 1
    assert f"completed backup without its manifest: {backup['id']}" in out.stdout
