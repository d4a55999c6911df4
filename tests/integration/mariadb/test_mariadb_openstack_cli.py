"""`openstack database user create` / `db create` / `root enable` on a managed MariaDB
instance against a live `strongroom serve`, then logins with the mariadb client over TCP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.live import LiveServer, start_server
from fixtures.service import wait_for
from support.mariadb import require_mariadb, scratch_root

pytestmark = pytest.mark.integration

OPENSTACK = shutil.which("openstack") or str(
    Path(__file__).resolve().parents[3] / ".venv/bin/openstack"
)
PASSWORD = "cli-" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    require_mariadb()
    with scratch_root("sr-mdb-cli-") as base, pytest.MonkeyPatch.context() as patch:
        patch.setenv("STRONGROOM_DATASTORES", '["sqlite", "mariadb"]')
        server = start_server(base / "data")
        try:
            yield server
        finally:
            server.stop()


def mariadb(host: str, port: int, user: str, password: str, db: str, query: str) -> Any:
    return subprocess.run(
        ["mariadb", "--no-defaults", "--protocol=TCP", "-h", host, "-P", str(port),
         "-u", user, "-N", "-B", "-e", query, db],
        env={"PATH": os.environ["PATH"], "MYSQL_PWD": password},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def test_user_db_and_root_made_by_the_cli_then_mariadb_logins(live: LiveServer) -> None:
    project = "m" + uuid.uuid4().hex[:10]
    token = live.token(project)

    def osc(*args: str, parse: bool = True) -> Any:
        out = subprocess.run(
            [OPENSTACK, "--os-auth-type", "admin_token", "--os-endpoint",
             live.endpoint(project), "--os-token", token, "database", *args,
             *(["-f", "json"] if parse else [])],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if parse else out.stdout

    created = osc("instance", "create", "mdb", "--flavor", "1", "--size", "1",
                  "--datastore", "mariadb")  # fmt: skip

    def active() -> dict[str, Any] | None:
        shown: dict[str, Any] = osc("instance", "show", created["id"])
        assert shown["status"] != "ERROR", shown
        return shown if shown["status"] == "ACTIVE" else None

    shown = wait_for(active, timeout=180, interval=0.5)
    osc("db", "create", created["id"], "shop", parse=False)
    osc("db", "create", created["id"], "other", parse=False)
    osc("user", "create", created["id"], "clerk", PASSWORD, "--databases", "shop", parse=False)
    users = osc("user", "list", created["id"])
    assert [(u["Name"], u["Host"], u["Databases"]) for u in users] == [("clerk", "%", "shop")]

    host = shown["ip"][0] if isinstance(shown["ip"], list) else shown["ip"]
    port = int(shown["connection"]["port"])
    out = mariadb(host, port, "clerk", PASSWORD, "shop", "SELECT CURRENT_USER()")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clerk@%"
    assert mariadb(host, port, "clerk", PASSWORD, "other", "SELECT 1").returncode != 0

    root = osc("root", "enable", created["id"])
    assert root["name"] == "root"
    out = mariadb(host, port, "root", root["password"], "other", "SELECT COUNT(*) FROM mysql.user")
    assert out.returncode == 0, out.stderr
    # root's FILE privilege reaches the files of the instance's own OS user only.
    metadata = live.data_dir / "strongroom.db"
    assert metadata.exists()
    out = mariadb(host, port, "root", root["password"], "other",
                  f"SELECT LOAD_FILE('{metadata}') IS NULL")  # fmt: skip
    assert out.stdout.strip() == "1", out.stderr
    osc("instance", "delete", created["id"], parse=False)
