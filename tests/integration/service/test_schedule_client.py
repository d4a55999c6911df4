"""`strongroom schedule …` and `strongroom backup verify` against a live `strongroom serve`,
configured from OS_ENDPOINT / OS_TOKEN as the OpenStack clients are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.live import LiveServer, start_server
from fixtures.service import wait_for


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(tmp_path / "data")
    try:
        yield live
    finally:
        live.stop()


def strongroom(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "strongroom", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def ok_json(env: dict[str, str], *args: str) -> Any:
    done = strongroom(env, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_schedule_commands_against_a_live_service(server: LiveServer) -> None:
    endpoint, token = server.endpoint("demo"), server.token("demo")
    env = {"OS_ENDPOINT": endpoint, "OS_TOKEN": token}
    http = httpx.Client(base_url=endpoint, headers={"X-Auth-Token": token}, timeout=30)
    r = http.post(
        "/instances",
        json={"instance": {"name": "db", "flavorRef": "1", "datastore": {"type": "sqlite"}}},
    )
    instance_id = r.json()["instance"]["id"]
    wait_for(lambda: http.get(f"/instances/{instance_id}").json()["instance"]["status"] == "ACTIVE")

    created = ok_json(
        env,
        "schedule", "create", "--instance", instance_id, "--name", "nightly",
        "--cron", "0 3 * * *", "--timezone", "Europe/Paris", "--incremental",
        "--full-every", "4", "--keep-daily", "7", "--keep-within", "36h", "--verify",
    )["backup_schedule"]  # fmt: skip
    assert created["retention"] == {"keep_daily": 7, "keep_within": "36h"}
    assert created["incremental"] is True and created["verify"] is True

    table = strongroom(env, "schedule", "list")
    assert table.returncode == 0, table.stderr
    assert created["id"] in table.stdout and "Europe/Paris" in table.stdout
    shown = strongroom(env, "schedule", "show", created["id"])
    assert shown.returncode == 0 and "next_run_at" in shown.stdout

    backup = ok_json(env, "schedule", "run", created["id"])["backup"]
    assert backup["schedule_id"] == created["id"]
    wait_for(lambda: http.get(f"/backups/{backup['id']}").json()["backup"]["status"] == "COMPLETED")
    # The schedule asked for --verify: the scheduler verifies the finished run itself, and a
    # verify asked for while that one runs is refused; once it ends, the client starts another.
    view = f"/backups/{backup['id']}"
    wait_for(lambda: http.get(view).json()["backup"].get("verify_status") == "OK")
    verified = ok_json(env, "backup", "verify", backup["id"])["backup"]
    assert verified["verify_status"] == "RUNNING"
    wait_for(lambda: http.get(f"/backups/{backup['id']}").json()["backup"]["verify_status"] == "OK")
    drilled = ok_json(env, "backup", "drill", backup["id"])["backup"]
    assert drilled["drill_status"] == "RUNNING"
    wait_for(lambda: http.get(f"/backups/{backup['id']}").json()["backup"]["drill_status"] == "OK")
    prune = strongroom(env, "schedule", "prune", created["id"], "--dry-run")
    assert prune.returncode == 0, prune.stderr
    assert backup["id"] in prune.stdout and "dry run" in prune.stdout

    assert strongroom(env, "schedule", "delete", created["id"]).returncode == 0
    missing = strongroom(env, "schedule", "show", created["id"])
    assert missing.returncode == 1 and "404" in missing.stderr

    # Another project's token sees nothing; no token at all is refused before any request.
    other = {"OS_ENDPOINT": server.endpoint("other"), "OS_TOKEN": server.token("other")}
    assert ok_json(other, "schedule", "list") == {"backup_schedules": []}
    refused = strongroom(other, "backup", "verify", backup["id"])
    assert refused.returncode == 1 and "404" in refused.stderr
    no_token = strongroom({"OS_ENDPOINT": endpoint, "OS_TOKEN": ""}, "schedule", "list")
    assert no_token.returncode == 1 and "OS_TOKEN" in no_token.stderr
    bad = strongroom(
        env, "schedule", "create", "--instance", instance_id, "--name", "x", "--cron", "nope"
    )
    assert bad.returncode == 1 and "400" in bad.stderr and "cron" in bad.stderr
