"""`strongroom check --read-data` reads every completed backup back and records the result."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fixtures.service import make_harness


def check(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "strongroom", "check", "--data-dir", str(data_dir), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "STRONGROOM_DATASTORES": '["sqlite"]'},
    )


def test_read_data_finds_a_changed_chunk_and_records_it(tmp_path: Path) -> None:
    h = make_harness(tmp_path)
    try:
        inst = h.a.wait_instance(h.a.create_instance()["id"])
        good = h.a.wait_backup(h.a.create_backup(inst["id"], "good")["id"])
        bad = h.a.wait_backup(h.a.create_backup(inst["id"], "bad")["id"])
    finally:
        h.container.close()
    data = h.settings.data_dir
    clean = check(data, "--read-data")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"backup {good['id']} (good): OK" in clean.stdout
    assert "read back 2 completed backups, 0 not OK" in clean.stdout

    chunk = data / "objects" / "database-backups" / bad["id"] / "chunk-00000000"
    raw = bytearray(chunk.read_bytes())
    raw[-1] ^= 0x01
    chunk.write_bytes(bytes(raw))
    found = check(data, "--read-data")
    assert found.returncode == 1
    assert f"backup {bad['id']} (bad): CORRUPT" in found.stdout
    assert f"backup {good['id']} (good): OK" in found.stdout
    # The result is on the backup, as the API shows it.
    h2 = make_harness(tmp_path)
    try:
        shown = h2.a.get(f"/backups/{bad['id']}").json()["backup"]
        assert shown["verify_status"] == "CORRUPT" and "chunk 0" in shown["verify_error"]
    finally:
        h2.container.close()
