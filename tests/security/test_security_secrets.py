"""Secrets stay secret: after a full scenario on a live server, no token, master key, wrapped
data key or database password appears in the server's log, in any response, in the server's
argv, or (for tokens, the master key and passwords) in the metadata database files."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from security.wire import Site, assert_fault, external_sqlite, live_site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with live_site(tmp_path_factory.mktemp("secrets")) as site:
        yield site


def forms(secret: str) -> list[bytes]:
    """The ways a text secret could be written: as text, and base64-decoded raw bytes."""
    found = [secret.encode()]
    try:
        raw = base64.b64decode(secret, validate=True)
    except ValueError:
        return found
    if len(raw) >= 16:
        found += [raw, raw.hex().encode()]
    return found


def test_no_secret_leaks_after_a_full_scenario(site: Site) -> None:
    a = site.a
    password = "pw-" + secrets.token_urlsafe(24)
    extra_token = site.server.token("proja")

    # A full scenario: instances, a full and an incremental backup, a restore, an external
    # instance registered with a password field, a restore_from registration, faults.
    instance = a.create_instance("src", users=[{"name": "app", "password": password}])
    a.wait_instance(instance["id"])
    full = a.wait_backup(a.create_backup(instance["id"], "full")["id"])
    incremental = a.wait_backup(a.create_backup(instance["id"], "inc", incremental=1)["id"])
    assert incremental["parent_id"] == full["id"]
    restored = a.create_instance("copy", restorePoint={"backupRef": incremental["id"]})
    a.wait_instance(restored["id"])
    db = external_sqlite(site.root / "external", "secret.db")
    external = a.post(
        "/instances",
        {
            "instance": {
                "name": "ext",
                "datastore": {"type": "sqlite"},
                "external": {"path": str(db), "password": password},
            }
        },
    )
    assert external.status_code == 200, external.text
    body = {
        "backup": {
            "name": "again",
            "restore_from": {
                "remote_location": full["locationRef"],
                "local_datastore_version_id": full["datastore"]["version_id"],
                "size": 1,
            },
        }
    }
    assert a.post("/backups", body).status_code == 202
    faults = [
        a.post("/instances", {"instance": {"name": "x", "external": {"path": "/etc/shadow"}}}),
        a.get("/backups/" + "x" * 300),
        a.post("/backups", {"backup": {"name": "x", "instance": instance["id"], "parent_id": 1}}),
    ]
    for fault in faults:
        assert_fault(fault, (400, 403, 404))
        assert str(site.server.data_dir) not in fault.text
    for caller in (site.b, site.admin):
        caller.get("/backups")
    a.request("GET", "/backups", headers={"X-Auth-Token": extra_token})

    data = site.server.data_dir
    master = (data / "master.key").read_text().strip()
    wrapped = [
        json.loads(p.read_bytes())["encryption"]["wrapped_key"]
        for p in (data / "objects").rglob("manifest.json")
    ]
    assert len(wrapped) >= 2
    tokens = [site.a.token, site.b.token, site.admin.token, extra_token]

    argv = Path(f"/proc/{site.server.process.pid}/cmdline").read_bytes()
    assert b"serve" in argv
    site.server.stop()  # flush the log and the database
    log = site.server.log_path.read_bytes()
    responses = b"\n".join(c for caller in site.callers for c in caller.received)
    database = b"".join(p.read_bytes() for p in data.glob("strongroom.db*"))
    assert b"backups" in responses and len(log) > 0 and database

    places = {
        "log": log,
        "responses": responses,
        "argv": argv,
        "database": database,
    }
    everywhere = [*tokens, master, password]
    for name, content in places.items():
        for secret in everywhere:
            for form in forms(secret):
                assert form not in content, f"a secret ({secret[:6]}…) is in the {name}"
    for key in wrapped:
        for name in ("log", "responses", "argv"):
            for form in forms(key):
                assert form not in places[name], f"a wrapped data key is in the {name}"


def test_the_first_admin_token_is_in_an_owner_only_file_not_in_the_output(site: Site) -> None:
    """Standard output of a service is a log (journal, pipe): it gets the file's path."""
    path = site.server.data_dir / "admin-token"
    assert path.read_text().strip() == site.server.admin_token
    assert path.stat().st_mode & 0o777 == 0o600
    printed = "".join(site.server.printed)
    assert str(path) in printed
    assert site.server.admin_token not in printed
