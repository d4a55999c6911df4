"""The `openstack database …` commands (OSC + trove plugin) against a live server."""

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from fixtures.service import wait_for

OPENSTACK = shutil.which("openstack") or str(
    Path(__file__).resolve().parents[2] / ".venv/bin/openstack"
)


@pytest.fixture(scope="module")
def osc(live_server):
    project = "o" + uuid.uuid4().hex[:12]
    token = live_server.token(project)

    def run(*args, parse=True):
        out = subprocess.run(
            [
                OPENSTACK,
                "--os-auth-type",
                "admin_token",
                "--os-endpoint",
                live_server.endpoint(project),
                "--os-token",
                token,
                "database",
                *args,
            ]
            + (["-f", "json"] if parse else []),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if parse else out.stdout

    run.project = project
    return run


def test_backup_lifecycle_through_the_cli(osc):
    inst = osc(
        "instance",
        "create",
        "cli-src",
        "--flavor",
        "1",
        "--size",
        "1",
        "--datastore",
        "sqlite",
        "--datastore-version",
        "3",
        "--nic",
        "net-id=11111111-2222-3333-4444-555555555555",
    )
    wait_for(lambda: osc("instance", "show", inst["id"])["status"] == "ACTIVE", timeout=60)
    created = osc(
        "backup", "create", "cli-full", "--instance", inst["id"], "--description", "from the cli"
    )
    wait_for(lambda: osc("backup", "show", created["id"])["status"] == "COMPLETED", timeout=60)
    shown = osc("backup", "show", "cli-full")
    assert (
        shown["id"] == created["id"] and shown["datastore"]["type"] == "sqlite"
        if isinstance(shown.get("datastore"), dict)
        else shown["id"] == created["id"]
    )
    listed = osc("backup", "list", "--instance-id", inst["id"])
    assert [b["ID"] for b in listed] == [created["id"]]
    incr = osc("backup", "create", "cli-incr", "--instance", inst["id"], "--incremental")
    wait_for(lambda: osc("backup", "show", incr["id"])["status"] == "COMPLETED", timeout=60)
    assert osc("backup", "show", incr["id"])["parent_id"] == created["id"]
    restored = osc(
        "instance",
        "create",
        "cli-restored",
        "--flavor",
        "1",
        "--size",
        "1",
        "--datastore",
        "sqlite",
        "--datastore-version",
        "3",
        "--backup",
        incr["id"],
        "--nic",
        "net-id=11111111-2222-3333-4444-555555555555",
    )
    wait_for(lambda: osc("instance", "show", restored["id"])["status"] == "ACTIVE", timeout=60)
    osc("backup", "delete", "cli-full", parse=False)
    wait_for(lambda: not osc("backup", "list"), timeout=60)


def test_list_follows_pagination_to_the_end(osc, live_server):
    # 45 RESTORED registrations of one real backup: the CLI must print all 45 without --limit.
    inst = osc("instance", "create", "pager", "--flavor", "1", "--datastore", "sqlite")
    wait_for(lambda: osc("instance", "show", inst["id"])["status"] == "ACTIVE", timeout=60)
    base = osc("backup", "create", "base", "--instance", inst["id"])
    wait_for(lambda: osc("backup", "show", base["id"])["status"] == "COMPLETED", timeout=60)
    location = osc("backup", "show", base["id"])["locationRef"]
    token_headers = {"X-Auth-Token": live_server.token(osc.project)}
    version = httpx.get(
        f"{live_server.endpoint(osc.project)}/datastores/sqlite", headers=token_headers
    ).json()["datastore"]["default_version"]
    before = len(osc("backup", "list"))
    for i in range(45 - before):
        r = httpx.post(
            f"{live_server.endpoint(osc.project)}/backups",
            json={
                "backup": {
                    "name": f"imp{i}",
                    "restore_from": {
                        "remote_location": location,
                        "local_datastore_version_id": version,
                        "size": 0.01,
                    },
                }
            },
            headers=token_headers,
        )
        assert r.status_code == 202, r.text
    assert len(osc("backup", "list")) == 45
    assert len(osc("backup", "list", "--limit", "2")) == 2


def test_strategy_commands(osc):
    iid = "44b277eb-39be-4921-be31-3d61b43651d7"
    osc(
        "backup",
        "strategy",
        "create",
        "--instance-id",
        iid,
        "--swift-container",
        "my_trove_backups",
    )
    listed = osc("backup", "strategy", "list")
    assert any(
        s.get("Swift Container", s.get("swift_container")) == "my_trove_backups" for s in listed
    )
    osc("backup", "strategy", "delete", "--instance-id", iid, parse=False)
    assert osc("backup", "strategy", "list") == []
