"""`key rotate` and `catalog rebuild` rewrite what a running service reads: they refuse to
start while `strongroom serve` runs on the same data dir or a worker's heartbeat is fresh,
and leave the key untouched; a service refuses to start while one of them runs."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from recovery_support import command, environment, run

from fixtures.live import start_server
from strongroom.service_lock import LOCK_NAME, service_stopped

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def beat(data_dir: Path, host: str, at: datetime) -> None:
    with sqlite3.connect(data_dir / "strongroom.db") as db:
        db.execute(
            "insert into workers (host_id, last_seen) values (?, ?)",
            (host, at.replace(tzinfo=None).isoformat(sep=" ")),
        )


def test_offline_commands_refuse_a_running_service_then_run_once_it_stopped(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    key_before = (data / "master.key").read_bytes()
    try:
        rotated = run("key", "rotate", "--data-dir", data, timeout=60)
        rebuilt = run("catalog", "rebuild", "--store", "local", "--data-dir", data, timeout=60)
    finally:
        assert server.stop() == 0
    assert rotated.returncode == 2, rotated.stdout + rotated.stderr
    assert "a Strongroom service is running" in rotated.stderr
    assert rebuilt.returncode == 2 and "a Strongroom service is running" in rebuilt.stderr
    assert (data / "master.key").read_bytes() == key_before

    # A worker elsewhere that beat a moment ago: still refused; one gone for longer than
    # its lease no longer counts.
    beat(data, "worker-2", datetime.now(UTC))
    refused = run("key", "rotate", "--data-dir", data, timeout=60)
    assert refused.returncode == 2 and "worker-2" in refused.stderr, refused.stderr
    assert (data / "master.key").read_bytes() == key_before
    with sqlite3.connect(data / "strongroom.db") as db:
        db.execute("delete from workers")
    beat(data, "worker-3", datetime.now(UTC) - timedelta(minutes=10))
    done = run("key", "rotate", "--data-dir", data, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (data / "master.key").read_bytes() != key_before


def test_a_service_does_not_start_while_an_offline_command_runs(tmp_path: Path) -> None:
    import subprocess

    data = tmp_path / "data"
    with service_stopped(data):
        refused = subprocess.run(
            command("serve", "--port", "0", "--data-dir", data),
            capture_output=True,
            text=True,
            timeout=60,
            env=environment(),
        )
    assert refused.returncode == 1
    assert "an offline command (key rotate, catalog rebuild) is running" in refused.stderr
    assert not (data / "strongroom.db").exists()  # it stopped before touching anything


def test_a_link_planted_as_the_lock_is_not_followed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    target = tmp_path / "elsewhere"
    target.write_text("not the service's")
    (data / LOCK_NAME).symlink_to(target)
    with pytest.raises(OSError), service_stopped(data):
        pass
    refused = run("key", "rotate", "--data-dir", data, timeout=60)
    assert refused.returncode == 2
    assert target.read_text() == "not the service's"
