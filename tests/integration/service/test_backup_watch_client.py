"""`strongroom backup create --wait` and `strongroom backup watch` against a live
`strongroom serve`: a progress bar that moves until COMPLETED (exit 0), and a FAILED
backup's reason with a non-zero exit."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.live import LiveServer, start_server
from fixtures.service import wait_for

BIG_ROWS = 2400  # 64 KiB of random bytes each: ~150 MiB, a few seconds to back up


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    # Progress recorded every 0.1 s: a backup of a few seconds shows several steps.
    live = start_server(tmp_path / "data", env={"STRONGROOM_PROGRESS_INTERVAL_SECONDS": "0.1"})
    try:
        yield live
    finally:
        live.stop()


def strongroom(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # A terminal as far as rich is concerned: the bar is redrawn in place as it moves.
    terminal = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "strongroom", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **terminal, **env},
        timeout=300,
    )


def instance(http: httpx.Client, name: str) -> dict[str, Any]:
    body = {"instance": {"name": name, "flavorRef": "1", "datastore": {"type": "sqlite"}}}
    instance_id = http.post("/instances", json=body).json()["instance"]["id"]

    def active() -> dict[str, Any] | None:
        found: dict[str, Any] = http.get(f"/instances/{instance_id}").json()["instance"]
        return found if found["status"] == "ACTIVE" else None

    result: dict[str, Any] = wait_for(active, timeout=60)
    return result


def plain(output: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)


def percents(output: str) -> list[int]:
    return [int(p) for p in re.findall(r"(\d{1,3})%", output)]


def test_backup_create_wait_draws_a_moving_bar_until_completed(server: LiveServer) -> None:
    endpoint, token = server.endpoint("demo"), server.token("demo")
    env = {"OS_ENDPOINT": endpoint, "OS_TOKEN": token}
    http = httpx.Client(base_url=endpoint, headers={"X-Auth-Token": token}, timeout=30)
    inst = instance(http, "big")
    with sqlite3.connect(inst["connection"]["path"]) as db:
        db.execute("create table t(id integer primary key, body blob)")
        db.executemany(
            "insert into t values (?, randomblob(65536))", [(i,) for i in range(BIG_ROWS)]
        )

    done = strongroom(
        env, "backup", "create", "nightly", "--instance", inst["id"], "--wait",
        "--interval", "0.05", "--timeout", "240",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    seen = percents(done.stdout)
    assert seen and seen[-1] == 100, done.stdout[-2000:]
    assert len(set(seen) - {0, 100}) >= 1, f"the bar never stood between 0 and 100: {seen}"
    assert seen == sorted(seen), seen  # it moves forward only
    assert "COMPLETED" in done.stdout and "/s" in done.stdout and "ETA" in done.stdout
    (backup,) = http.get("/backups").json()["backups"]
    assert backup["status"] == "COMPLETED" and backup["name"] == "nightly"

    # watch on a backup that already ended: one frame, exit 0
    watched = strongroom(env, "backup", "watch", backup["id"], "--timeout", "60")
    assert watched.returncode == 0, watched.stderr
    assert f"backup {backup['id']} COMPLETED" in plain(watched.stdout)


def test_backup_watch_exits_non_zero_with_the_reason_on_failed(server: LiveServer) -> None:
    endpoint, token = server.endpoint("demo"), server.token("demo")
    env = {"OS_ENDPOINT": endpoint, "OS_TOKEN": token}
    http = httpx.Client(base_url=endpoint, headers={"X-Auth-Token": token}, timeout=30)
    inst = instance(http, "gone")
    db_path = Path(inst["connection"]["path"])
    for leftover in db_path.parent.glob(db_path.name + "*"):
        leftover.unlink()  # the database file is gone: the backup fails, with a reason

    done = strongroom(
        env, "backup", "create", "doomed", "--instance", inst["id"], "--wait",
        "--interval", "0.05", "--timeout", "120",
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    (backup,) = http.get("/backups").json()["backups"]
    assert backup["status"] == "FAILED"
    assert f"backup {backup['id']} FAILED: {backup['fail_reason']}" in done.stderr

    watched = strongroom(env, "backup", "watch", backup["id"], "--timeout", "60")
    assert watched.returncode == 2 and backup["fail_reason"] in watched.stderr


def test_backup_watch_refuses_another_projects_backup(server: LiveServer) -> None:
    env_a = {"OS_ENDPOINT": server.endpoint("a"), "OS_TOKEN": server.token("a")}
    env_b = {"OS_ENDPOINT": server.endpoint("b"), "OS_TOKEN": server.token("b")}
    http = httpx.Client(
        base_url=env_a["OS_ENDPOINT"], headers={"X-Auth-Token": env_a["OS_TOKEN"]}, timeout=30
    )
    inst = instance(http, "a-db")
    made = strongroom(env_a, "backup", "create", "a-bk", "--instance", inst["id"], "--wait")
    assert made.returncode == 0, made.stderr
    (backup,) = http.get("/backups").json()["backups"]
    other = strongroom(env_b, "backup", "watch", backup["id"], "--timeout", "30")
    assert other.returncode == 1 and "404" in other.stderr
    assert "a-bk" not in other.stdout + other.stderr
    no_token = strongroom({"OS_ENDPOINT": env_a["OS_ENDPOINT"], "OS_TOKEN": ""}, "backup",
                          "watch", backup["id"])  # fmt: skip
    assert no_token.returncode == 1 and "no token" in no_token.stderr
