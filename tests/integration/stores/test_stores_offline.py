"""Offline restore and listing from a real Swift and its S3 API: SQLite backups taken
through the service into each store, the service gone, then `strongroom restore` and
`strongroom ls` with a store config file and the key alone."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from fixtures.service import make_harness
from fixtures.swift import SwiftServer
from integration.offline.offline_support import lose_the_service, strongroom

pytestmark = pytest.mark.integration


def store_toml(server: SwiftServer, kind: str) -> str:
    if kind == "swift":
        return (
            '[[stores]]\nname = "swift"\nkind = "swift"\n'
            f'auth_url = "{server.auth_url}"\nauth_version = "1"\n'
            f'user = "{server.user}"\nkey = "{server.key}"\n'
        )
    return (
        '[[stores]]\nname = "s3"\nkind = "s3"\n'
        f'endpoint_url = "{server.s3_endpoint}"\nregion = "{server.s3_region}"\n'
        f'access_key = "{server.s3_access_key}"\nsecret_key = "{server.s3_secret_key}"\n'
        'addressing_style = "path"\n'
    )


def rows(path: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return list(db.execute("SELECT id, body FROM notes ORDER BY id"))
    finally:
        db.close()


@pytest.mark.parametrize("kind", ["swift", "s3"])
def test_offline_restore_and_ls_from_a_remote_store(
    tmp_path: Path, swift_server: SwiftServer, kind: str
) -> None:
    config = tmp_path / "store.toml"
    config.write_text(store_toml(swift_server, kind))
    config.chmod(0o600)
    entry = _entry(swift_server, kind)
    container = "c-" + uuid.uuid4().hex[:12]
    h = make_harness(
        tmp_path,
        stores=[entry],
        default_store=kind,
        default_container=container,
        chunk_size=64 * 1024,
    )
    db = tmp_path / "external" / "app.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        c.executemany("INSERT INTO notes VALUES (?, ?)", [(i, "n" * 500) for i in range(1000)])
    inst = h.a.wait_instance(h.a.create_instance("app", external={"path": str(db)})["id"])
    full = h.a.wait_backup(h.a.create_backup(inst["id"], "full")["id"])
    with sqlite3.connect(db) as c:
        c.execute("UPDATE notes SET body = 'changed' WHERE id % 5 = 0")
    incr = h.a.wait_backup(h.a.create_backup(inst["id"], "incr", incremental=1)["id"])
    expected = rows(db)
    key = lose_the_service(h)

    url = incr["locationRef"]
    assert url.startswith("s3://" if kind == "s3" else "http")
    target = tmp_path / "restored.db"
    without = strongroom("restore", "--from", url, "--key", key, "--to", target)
    assert without.returncode == 1 and "--store-config" in without.stderr
    done = strongroom(
        "restore", "--from", url, "--key", key, "--store-config", config, "--to", target
    )
    assert done.returncode == 0, done.stderr
    assert rows(target) == expected

    container_url = url.rsplit("/", 2)[0]
    listed = strongroom(
        "ls", "--from", container_url, "--key", key, "--store-config", config, "--json"
    )
    assert listed.returncode == 0, listed.stderr
    assert [b["id"] for b in json.loads(listed.stdout)] == [full["id"], incr["id"]]


def _entry(server: SwiftServer, kind: str) -> dict[str, str]:
    if kind == "swift":
        return {
            "name": "swift",
            "kind": "swift",
            "auth_url": server.auth_url,
            "auth_version": "1",
            "user": server.user,
            "key": server.key,
        }
    return {
        "name": "s3",
        "kind": "s3",
        "endpoint_url": server.s3_endpoint,
        "region": server.s3_region,
        "access_key": server.s3_access_key,
        "secret_key": server.s3_secret_key,
    }
