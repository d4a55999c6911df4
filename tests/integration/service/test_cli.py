"""The `strongroom` command: tokens, first start, key file."""

import stat
import subprocess
import sys

import httpx

from fixtures.live import start_server


def strongroom(*args):
    return subprocess.run(
        [sys.executable, "-m", "strongroom", *args], capture_output=True, text=True, timeout=60
    )


def test_token_create_list_revoke(tmp_path):
    data = tmp_path / "data"
    out = strongroom("token", "create", "--data-dir", str(data), "--project-id", "p1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    token = lines[0]
    listed = strongroom("token", "list", "--data-dir", str(data))
    assert listed.returncode == 0
    assert "p1" in listed.stdout
    assert token not in listed.stdout
    token_id = next(
        word for line in listed.stdout.splitlines() for word in line.split() if len(word) == 36
    )
    assert strongroom("token", "revoke", "--data-dir", str(data), token_id).returncode == 0
    assert strongroom("token", "revoke", "--data-dir", str(data), token_id).returncode == 1
    stored = (data / "strongroom.db").read_bytes()
    assert token.encode() not in stored


def test_first_start_prints_admin_token_once_and_key_is_private(tmp_path):
    data = tmp_path / "data"
    server = start_server(data)
    try:
        assert server.admin_token
        r = httpx.get(
            f"{server.url}/v1.0/admin/backups?all_projects=1",
            headers={"X-Auth-Token": server.admin_token},
        )
        assert r.status_code == 200
    finally:
        server.stop()
    mode = stat.S_IMODE((data / "master.key").stat().st_mode)
    assert mode == 0o600
    again = start_server(data)
    try:
        assert again.admin_token == ""
        r = httpx.get(
            f"{again.url}/v1.0/admin/backups", headers={"X-Auth-Token": server.admin_token}
        )
        assert r.status_code == 200
    finally:
        assert again.stop() == 0
