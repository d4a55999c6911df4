"""`strongroom backup copy` and `schedule create --copy-to` against a live service with
two local stores."""

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
    config = tmp_path / "strongroom.toml"
    config.write_text(
        'default_store = "local"\n'
        f'[[stores]]\nname = "local"\nkind = "local"\nroot = "{tmp_path / "primary"}"\n'
        f'[[stores]]\nname = "offsite"\nkind = "local"\nroot = "{tmp_path / "offsite"}"\n'
    )
    live = start_server(tmp_path / "data", "--config", str(config))
    try:
        yield live
    finally:
        live.stop()


def ok_json(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "strongroom", *args, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_copy_commands(server: LiveServer, tmp_path: Path) -> None:
    endpoint, token = server.endpoint("demo"), server.token("demo")
    env = {"OS_ENDPOINT": endpoint, "OS_TOKEN": token}
    http = httpx.Client(base_url=endpoint, headers={"X-Auth-Token": token}, timeout=30)
    r = http.post(
        "/instances",
        json={"instance": {"name": "db", "flavorRef": "1", "datastore": {"type": "sqlite"}}},
    )
    instance_id = r.json()["instance"]["id"]
    wait_for(lambda: http.get(f"/instances/{instance_id}").json()["instance"]["status"] == "ACTIVE")
    backup = ok_json(env, "backup", "create", "b", "--instance", instance_id, "--wait")["backup"]

    copied = ok_json(env, "backup", "copy", backup["id"], "--to", "offsite", "--container", "far")
    assert copied["backup"]["copies"][0]["storage_driver"] == "offsite"

    def completed() -> bool:
        shown = http.get(f"/backups/{backup['id']}").json()["backup"]
        return bool(shown["copies"]) and shown["copies"][0]["state"] == "COMPLETED"

    wait_for(completed)
    assert (tmp_path / "offsite" / "far" / backup["id"] / "manifest.json").exists()

    schedule = ok_json(
        env,
        "schedule", "create", "--instance", instance_id, "--name", "n", "--cron", "0 3 * * *",
        "--copy-to", "offsite", "--copy-container", "far", "--copy-keep-last", "2",
    )["backup_schedule"]  # fmt: skip
    assert schedule["copy_to"] == {"storage_driver": "offsite", "swift_container": "far"}
    assert schedule["copy_retention"] == {"keep_last": 2}
