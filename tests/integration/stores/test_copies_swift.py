"""Copies between a local store and a real Swift, end to end through the service: the
copy is verified, and a restore comes from it when the primary is gone or damaged."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.service import Caller, Harness, make_harness, wait_for
from fixtures.swift import (
    SwiftServer,
    _Unavailable,
    skip_or_fail,
    start_swift,
    stop_swift,
    swift_ports,
)
from strongroom.storage.config import SwiftStoreConfig
from strongroom.storage.registry import StoreSet

QUERY = "select id, body from notes order by id"


@pytest.fixture
def h(tmp_path: Path, swift_server: SwiftServer) -> Iterator[Harness]:
    harness = make_harness(
        tmp_path,
        stores=[
            {"name": "local", "kind": "local", "root": str(tmp_path / "primary")},
            {
                "name": "swift",
                "kind": "swift",
                "auth_url": swift_server.auth_url,
                "auth_version": "1",
                "user": swift_server.user,
                "key": swift_server.key,
            },
        ],
        default_store="local",
        default_container="c-" + uuid.uuid4().hex[:12],
        chunk_size=64 * 1024,
    )
    try:
        yield harness
    finally:
        harness.container.close()


def chain(h: Harness, driver: str) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    inst = h.a.create_instance("src")
    path = h.a.wait_instance(inst["id"])["connection"]["path"]
    with sqlite3.connect(path) as db:
        db.execute("create table notes(id integer primary key, body text)")
        db.executemany("insert into notes values (?, ?)", [(i, f"r{i}" * 40) for i in range(3000)])
    full = h.a.wait_backup(h.a.create_backup(inst["id"], "full", storage_driver=driver)["id"])
    with sqlite3.connect(path) as db:
        db.executemany("insert into notes values (?, ?)", [(i, "new") for i in range(3000, 3100)])
        rows = db.execute(QUERY).fetchall()
    incr = h.a.wait_backup(
        h.a.create_backup(inst["id"], "incr", incremental=1, storage_driver=driver)["id"]
    )
    return full, incr, rows


def copied(caller: Caller, backup_id: str, store: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        backup = caller.get(f"/backups/{backup_id}").json()["backup"]
        found = [c for c in backup["copies"] if c["storage_driver"] == store]
        return found[0] if found and found[0]["state"] != "COPYING" else None

    result: dict[str, Any] = wait_for(done)
    assert result["state"] == "COMPLETED", result
    return result


def restored_rows(caller: Caller, backup_id: str) -> tuple[list[Any], str]:
    body = {"instance": {"name": "r", "flavorRef": "1", "restorePoint": {"backupRef": backup_id}}}
    r = caller.post("/instances", body)
    assert r.status_code == 200, r.text
    inst = caller.wait_instance(r.json()["instance"]["id"])
    with sqlite3.connect(inst["connection"]["path"]) as db:
        return db.execute(QUERY).fetchall(), inst["fault"]["message"]


def test_local_backup_copied_to_swift_restores_when_the_local_store_is_gone(
    h: Harness, tmp_path: Path, swift_server: SwiftServer
):
    full, incr, rows = chain(h, "local")
    r = h.a.post(f"/backups/{incr['id']}/copy", {"copy": {"storage_driver": "swift"}})
    assert r.status_code == 202, r.text
    done = copied(h.a, incr["id"], "swift")
    container = h.settings.default_container
    assert done["location_ref"] == (
        f"{swift_server.storage_url}/{container}/{incr['id']}/manifest.json"
    )
    copied(h.a, full["id"], "swift")
    # No store credential in any answer about the copy.
    for text in (r.text, h.a.get(f"/backups/{incr['id']}").text, h.a.get("/backups").text):
        assert swift_server.key not in text and swift_server.user not in text
    shutil.move(tmp_path / "primary" / container, tmp_path / "lost")
    got, note = restored_rows(h.a, incr["id"])
    assert got == rows
    assert "'swift'" in note


def test_swift_backup_with_a_damaged_chunk_restores_from_its_local_copy(
    h: Harness, tmp_path: Path, swift_server: SwiftServer
):
    full, incr, rows = chain(h, "swift")
    r = h.a.post(
        f"/backups/{incr['id']}/copy",
        {"copy": {"storage_driver": "local", "swift_container": "offsite"}},
    )
    assert r.status_code == 202, r.text
    copied(h.a, incr["id"], "local")
    stores = StoreSet.from_configs(
        [
            SwiftStoreConfig(
                name="swift",
                auth_url=swift_server.auth_url,
                user=swift_server.user,
                key=swift_server.key,
            )
        ],
        "swift",
    )
    try:
        backend = stores.get("swift")
        prefix = f"{h.settings.default_container}/{full['id']}/"
        chunk = [k for k in backend.list(prefix) if "chunk-" in k][1]
        data = bytearray(backend.get(chunk))
        data[100] ^= 0x01
        backend.put(chunk, bytes(data))
    finally:
        stores.close()
    got, note = restored_rows(h.a, incr["id"])
    assert got == rows
    assert "'local'" in note and "chunk" in note.lower()
    # Deleting the chain removes the copies in the local store too.
    assert h.a.delete(f"/backups/{full['id']}").status_code == 202
    h.wait_idle()
    assert h.a.get(f"/backups/{incr['id']}").status_code == 404
    assert list((tmp_path / "primary" / "offsite").iterdir()) == []


@pytest.fixture
def dead_swift_harness(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Harness, Callable[[], None]]]:
    """A harness whose primary store is a Swift of its own, which the test stops."""
    base = tmp_path_factory.mktemp("private-swift")
    server = start_swift(base, swift_ports())
    if isinstance(server, _Unavailable):
        skip_or_fail("swift", server.reason)
    harness = make_harness(
        tmp_path,
        stores=[
            {
                "name": "swift",
                "kind": "swift",
                "auth_url": server.auth_url,
                "auth_version": "1",
                "user": server.user,
                "key": server.key,
            },
            {"name": "offsite", "kind": "local", "root": str(tmp_path / "offsite")},
        ],
        default_store="swift",
        chunk_size=64 * 1024,
    )
    try:
        yield harness, lambda: stop_swift(base)
    finally:
        harness.container.close()
        stop_swift(base)


def test_primary_swift_stopped_restore_comes_from_the_local_copy(dead_swift_harness):
    h, stop = dead_swift_harness
    _, incr, rows = chain(h, "swift")
    assert (
        h.a.post(f"/backups/{incr['id']}/copy", {"copy": {"storage_driver": "offsite"}}).status_code
        == 202
    )
    copied(h.a, incr["id"], "offsite")
    stop()
    got, note = restored_rows(h.a, incr["id"])
    assert got == rows
    assert "'offsite'" in note
