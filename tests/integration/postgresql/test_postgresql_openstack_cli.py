"""From `openstack database instance create` to psql: a managed PostgreSQL instance, a
database and a user made with the `openstack database …` commands (admin_token plugin,
as the README shows) against a live `strongroom serve`, then logins with psql."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.live import LiveServer, start_server
from fixtures.service import wait_for
from support.postgresql_service import PG_MAJOR, reachable_dir

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]

OPENSTACK = shutil.which("openstack") or str(
    Path(__file__).resolve().parents[3] / ".venv/bin/openstack"
)
PASSWORD = "cli-" + uuid.uuid4().hex[:12]
Osc = Callable[..., Any]


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with reachable_dir("strongroom-pgcli-") as base, pytest.MonkeyPatch.context() as patch:
        patch.setenv("STRONGROOM_DATASTORES", '["sqlite", "postgresql"]')
        server = start_server(base / "data")
        try:
            yield server
        finally:
            server.stop()


def osc_for(live: LiveServer, project: str) -> Osc:
    token = live.token(project)

    def run(*args: str, parse: bool = True, ok: bool = True) -> Any:
        out = subprocess.run(
            [
                OPENSTACK,
                "--os-auth-type",
                "admin_token",
                "--os-endpoint",
                live.endpoint(project),
                "--os-token",
                token,
                "database",
                *args,
                *(["-f", "json"] if parse else []),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if not ok:
            return out
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if parse else out.stdout

    return run


def psql(host: str, port: int, user: str, password: str, db: str, query: str) -> Any:
    return subprocess.run(
        ["psql", "-X", "-qAt", "-h", host, "-p", str(port), "-U", user, "-d", db, "-c", query],
        env={"PATH": os.environ["PATH"], "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_instance_create_to_psql_with_a_user_made_by_the_cli(live: LiveServer) -> None:
    osc = osc_for(live, "p" + uuid.uuid4().hex[:10])
    created = osc(
        "instance", "create", "app", "--flavor", "1", "--size", "1",
        "--datastore", "postgresql", "--datastore-version", PG_MAJOR or "",
    )  # fmt: skip

    def active() -> dict[str, Any] | None:
        shown: dict[str, Any] = osc("instance", "show", created["id"])
        assert shown["status"] != "ERROR", shown
        return shown if shown["status"] == "ACTIVE" else None

    shown = wait_for(active, timeout=180, interval=0.5)
    osc("db", "create", created["id"], "shop", parse=False)
    osc("db", "create", created["id"], "other", parse=False)
    osc("user", "create", created["id"], "clerk", PASSWORD, "--databases", "shop", parse=False)
    users = osc("user", "list", created["id"])
    assert [(u["Name"], u["Databases"]) for u in users] == [("clerk", "shop")]
    assert sorted(d["Name"] for d in osc("db", "list", created["id"])) == ["other", "shop"]

    # The view says where: the address and the port.
    host = shown["ip"][0] if isinstance(shown["ip"], list) else shown["ip"]
    port = int(shown["connection"]["port"])
    out = psql(host, port, "clerk", PASSWORD, "shop", "SELECT current_user")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clerk"
    assert psql(host, port, "clerk", PASSWORD, "other", "SELECT 1").returncode != 0

    root = osc("root", "enable", created["id"])
    assert root["name"] == "root"
    out = psql(host, port, "root", root["password"], "postgres", "SELECT rolsuper FROM pg_roles "
               "WHERE rolname = current_user")  # fmt: skip
    assert out.stdout.strip() == "t", out.stderr
    assert osc("root", "show", created["id"])["is_root_enabled"] is True

    # Another project sees none of it.
    stranger = osc_for(live, "q" + uuid.uuid4().hex[:10])
    refused = stranger("user", "list", created["id"], ok=False)
    # (the client looks the instance up first, and gets 404)
    assert refused.returncode != 0 and "No instance with a name or ID" in refused.stderr
    osc("instance", "delete", created["id"], parse=False)
