"""`strongroom check` finds objects no backup refers to, and `--fix` removes only those."""

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
    finally:
        h.container.close()
    data = h.settings.data_dir
    clean = check(data)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "consistent" in clean.stdout

    orphan_dir = data / "objects" / "database-backups" / str(uuid.uuid4())
    orphan_dir.mkdir(parents=True)
    (orphan_dir / "chunk-00000000").write_bytes(b"left over")
    found = check(data)
    assert found.returncode == 1
    assert (
        f"orphaned object: local:database-backups/{orphan_dir.name}/chunk-00000000" in found.stdout
    )
    assert kept["id"] not in found.stdout

    fixed = check(data, "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "removed 1 orphaned objects" in fixed.stdout
    assert not orphan_dir.exists()
    assert (data / "objects" / "database-backups" / kept["id"] / "manifest.json").exists()
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
