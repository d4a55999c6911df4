"""Backups in a real Swift and through its S3 API, end to end through the service."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.service import Harness, make_harness, wait_for
from fixtures.swift import (
    SwiftServer,
    _Unavailable,
    skip_or_fail,
    start_swift,
    stop_swift,
    swift_ports,
)
from strongroom.storage.config import S3StoreConfig, SwiftStoreConfig
from strongroom.storage.registry import StoreSet

QUERY = "select id, body from notes order by id"


def swift_store(server: SwiftServer, name: str = "swift", **extra: object) -> dict:
    return {
        "name": name,
        "kind": "swift",
        "auth_url": server.auth_url,
        "auth_version": "1",
        "user": server.user,
        "key": server.key,
        **extra,
    }


def s3_store(server: SwiftServer, name: str = "s3") -> dict:
    return {
        "name": name,
        "kind": "s3",
        "endpoint_url": server.s3_endpoint,
        "region": server.s3_region,
        "access_key": server.s3_access_key,
        "secret_key": server.s3_secret_key,
    }


def backends(server: SwiftServer) -> StoreSet:
    return StoreSet.from_configs(
        [
            SwiftStoreConfig(
                name="swift", auth_url=server.auth_url, user=server.user, key=server.key
            ),
            S3StoreConfig(
                name="s3",
                endpoint_url=server.s3_endpoint,
                region=server.s3_region,
                access_key=server.s3_access_key,
                secret_key=server.s3_secret_key,
            ),
        ],
        "swift",
    )


@pytest.fixture
def stores_harness(tmp_path: Path, swift_server: SwiftServer) -> Iterator[Harness]:
    h = make_harness(
        tmp_path,
        stores=[
            {"name": "local", "kind": "local"},
            swift_store(swift_server),
            s3_store(swift_server),
        ],
        default_store="local",
        default_container="c-" + uuid.uuid4().hex[:12],
        chunk_size=256 * 1024,
    )
    try:
        yield h
    finally:
        h.container.close()


def write_rows(path: str, start: int, count: int) -> list[tuple]:
    with sqlite3.connect(path) as db:
        db.execute("create table if not exists notes(id integer primary key, body text)")
        db.executemany(
            "insert into notes values (?, ?)",
            [(i, os.urandom(64).hex()) for i in range(start, start + count)],
        )
        return db.execute(QUERY).fetchall()


def restore_rows(h: Harness, backup_id: str) -> list[tuple]:
    r = h.a.post(
        "/instances",
        {"instance": {"name": "r", "flavorRef": "1", "restorePoint": {"backupRef": backup_id}}},
    )
    assert r.status_code == 200, r.text
    restored = h.a.wait_instance(r.json()["instance"]["id"])
    with sqlite3.connect(restored["connection"]["path"]) as db:
        return db.execute(QUERY).fetchall()


def source(h: Harness) -> dict:
    inst = h.a.create_instance("src")
    return h.a.wait_instance(inst["id"])


@pytest.mark.parametrize("driver", ["swift", "s3"])
def test_full_and_incremental_restore_on_object_store(stores_harness, swift_server, driver):
    h = stores_harness
    inst = source(h)
    path = inst["connection"]["path"]
    at_full = write_rows(path, 0, 4000)
    full = h.a.wait_backup(h.a.create_backup(inst["id"], "full", storage_driver=driver)["id"])
    at_incr = write_rows(path, 4000, 200)
    incr = h.a.wait_backup(
        h.a.create_backup(inst["id"], "incr", incremental=1, storage_driver=driver)["id"]
    )
    assert incr["parent_id"] == full["id"]
    assert full["storage_driver"] == driver
    container = h.settings.default_container
    if driver == "swift":
        assert (
            full["locationRef"]
            == f"{swift_server.storage_url}/{container}/{full['id']}/manifest.json"
        )
    else:
        assert full["locationRef"] == f"s3://{container}/{full['id']}/manifest.json"
    assert incr["stored_bytes"] < full["stored_bytes"] / 5
    assert restore_rows(h, full["id"]) == at_full
    assert restore_rows(h, incr["id"]) == at_incr
    # Delete removes every object of the chain from the store.
    store = backends(swift_server)
    try:
        backend = store.get(driver)
        assert backend.list(f"{container}/{full['id']}/")
        assert h.a.delete(f"/backups/{full['id']}").status_code == 202
        h.wait_idle()
        assert backend.list(f"{container}/{full['id']}/") == []
        assert backend.list(f"{container}/{incr['id']}/") == []
    finally:
        store.close()


def test_default_store_and_strategies_choose_container(stores_harness, swift_server):
    h = stores_harness
    inst = source(h)
    write_rows(inst["connection"]["path"], 0, 100)
    local = h.a.wait_backup(h.a.create_backup(inst["id"], "local")["id"])
    assert local["locationRef"].startswith("file://")
    container = "strategy-" + uuid.uuid4().hex[:8]
    r = h.a.post(
        "/backup_strategies",
        {"backup_strategy": {"instance_id": inst["id"], "swift_container": container}},
    )
    assert r.status_code == 202
    chosen = h.a.wait_backup(h.a.create_backup(inst["id"], "chosen", storage_driver="swift")["id"])
    assert (
        chosen["locationRef"]
        == f"{swift_server.storage_url}/{container}/{chosen['id']}/manifest.json"
    )
    store = backends(swift_server)
    try:
        assert store.get("swift").list(f"{container}/{chosen['id']}/manifest.json")
    finally:
        store.close()


def copy_backup(src, src_container, dst, dst_container, backup_id):
    for key in src.list(f"{src_container}/{backup_id}/"):
        name = key.split("/", 1)[1]
        dst.put(f"{dst_container}/{name}", src.get(key))


@pytest.mark.parametrize("target", ["swift", "s3"])
def test_restore_from_another_container_and_backend(stores_harness, swift_server, target):
    h = stores_harness
    inst = source(h)
    path = inst["connection"]["path"]
    write_rows(path, 0, 1000)
    full = h.a.wait_backup(h.a.create_backup(inst["id"], "full", storage_driver="swift")["id"])
    expected = write_rows(path, 1000, 100)
    incr = h.a.wait_backup(
        h.a.create_backup(inst["id"], "incr", incremental=1, storage_driver="swift")["id"]
    )
    other = "moved-" + uuid.uuid4().hex[:8]
    store = backends(swift_server)
    try:
        for backup in (full, incr):
            copy_backup(
                store.get("swift"),
                h.settings.default_container,
                store.get(target),
                other,
                backup["id"],
            )
        location = store.get(target).url_for(f"{other}/{incr['id']}/manifest.json")
    finally:
        store.close()
    vid = h.a.get("/datastores/sqlite").json()["datastore"]["default_version"]
    r = h.a.post(
        "/backups",
        {
            "backup": {
                "name": "moved",
                "restore_from": {
                    "remote_location": location,
                    "local_datastore_version_id": vid,
                    "size": 0.01,
                },
            }
        },
    )
    assert r.status_code == 202, r.text
    imported = r.json()["backup"]
    assert imported["status"] == "RESTORED" and imported["locationRef"] == location
    # The originals go away; the imported copy still restores the whole chain.
    assert h.a.delete(f"/backups/{full['id']}").status_code == 202
    h.wait_idle()
    assert restore_rows(h, imported["id"]) == expected


def test_restore_from_unreadable_location_is_400(stores_harness, swift_server):
    h = stores_harness
    vid = h.a.get("/datastores/sqlite").json()["datastore"]["default_version"]
    for location in (
        f"{swift_server.storage_url}/nowhere/{uuid.uuid4()}/manifest.json",
        f"s3://nowhere-{uuid.uuid4().hex[:6]}/x/manifest.json",
        "ftp://example/x/manifest.json",
    ):
        r = h.a.post(
            "/backups",
            {
                "backup": {
                    "name": "x",
                    "restore_from": {
                        "remote_location": location,
                        "local_datastore_version_id": vid,
                        "size": 1,
                    },
                }
            },
        )
        assert r.status_code == 400
        assert r.json()["badRequest"]["message"] == f"Failed to restore backup from {location}"


def test_overwritten_chunk_in_swift_is_refused(stores_harness, swift_server):
    h = stores_harness
    inst = source(h)
    write_rows(inst["connection"]["path"], 0, 3000)
    full = h.a.wait_backup(h.a.create_backup(inst["id"], "full", storage_driver="swift")["id"])
    store = backends(swift_server)
    try:
        backend = store.get("swift")
        chunks = [
            k
            for k in backend.list(f"{h.settings.default_container}/{full['id']}/")
            if "chunk-" in k
        ]
        assert len(chunks) > 1
        backend.put(chunks[1], os.urandom(len(backend.get(chunks[1]))))
    finally:
        store.close()
    r = h.a.post(
        "/instances",
        {"instance": {"name": "r", "flavorRef": "1", "restorePoint": {"backupRef": full["id"]}}},
    )
    failed = h.a.wait_instance(r.json()["instance"]["id"], "ERROR")
    assert "chunk" in failed["fault"]["message"].lower()


# -- faults that need a Swift of their own (it is stopped and started) ----------------------


@pytest.fixture
def private_swift(tmp_path_factory) -> Iterator[tuple[SwiftServer, callable, callable]]:
    base = tmp_path_factory.mktemp("private-swift")
    ports = swift_ports()
    server = start_swift(base, ports)
    if isinstance(server, _Unavailable):
        skip_or_fail("swift", server.reason)

    def stop() -> None:
        stop_swift(base)

    def start() -> None:
        # The old processes' sockets may take a moment to go; poll, bounded.
        deadline = time.monotonic() + 20
        while isinstance(again := start_swift(base, ports), _Unavailable):
            assert "not free" in again.reason and time.monotonic() < deadline, again
            time.sleep(0.5)

    try:
        yield server, stop, start
    finally:
        stop_swift(base)


@pytest.fixture
def private_harness(tmp_path, private_swift) -> Iterator[Harness]:
    server, _, _ = private_swift
    h = make_harness(tmp_path, stores=[swift_store(server)], chunk_size=256 * 1024)
    try:
        yield h
    finally:
        h.container.close()


def locked_external(h: Harness, tmp_path: Path) -> tuple[dict, sqlite3.Connection]:
    path = tmp_path / "external" / "locked.db"
    with sqlite3.connect(path) as db:
        db.execute("pragma journal_mode=delete")
        db.execute("create table notes(id integer primary key, body text)")
        db.executemany(
            "insert into notes values (?, ?)", [(i, os.urandom(200).hex()) for i in range(3000)]
        )
    r = h.a.post(
        "/instances",
        {
            "instance": {
                "name": "ext",
                "datastore": {"type": "sqlite"},
                "external": {"path": str(path)},
            }
        },
    )
    assert r.status_code == 200, r.text
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("begin exclusive")
    return r.json()["instance"], locker


def test_swift_stopped_mid_backup_fails_and_leaves_no_manifest(
    private_harness, private_swift, tmp_path
):
    h = private_harness
    server, stop, start = private_swift
    inst, locker = locked_external(h, tmp_path)
    backup = h.a.create_backup(inst["id"], "doomed")
    wait_for(lambda: h.a.get(f"/backups/{backup['id']}").json()["backup"]["status"] == "BUILDING")
    stop()
    locker.execute("rollback")
    locker.close()
    failed = h.a.wait_backup(backup["id"], ("FAILED",))
    assert failed["fail_reason"]
    assert "Traceback" not in failed["fail_reason"]
    start()
    store = backends(server)
    try:
        assert store.get("swift").list(f"{h.settings.default_container}/{backup['id']}/") == []
    finally:
        store.close()
    # With Swift back, the same instance backs up again.
    h.a.wait_backup(h.a.create_backup(inst["id"], "again")["id"])


def test_swift_down_at_create_is_server_error(private_harness, private_swift):
    h = private_harness
    _, stop, start = private_swift
    inst = source(h)
    stop()
    try:
        r = h.a.post("/backups", {"backup": {"name": "b", "instance": inst["id"]}})
        assert r.status_code == 500
        assert r.json() == {"serverError": {"code": 500, "message": "Cannot connect to Swift."}}
        assert h.a.get("/backups").json() == {"backups": []}
    finally:
        start()


def test_delete_failed_when_the_store_refuses_then_deleted_again(private_harness, private_swift):
    h = private_harness
    server, stop, start = private_swift
    inst = source(h)
    write_rows(inst["connection"]["path"], 0, 500)
    backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
    h.container.queue.hold()
    assert h.a.delete(f"/backups/{backup['id']}").status_code == 202
    stop()
    h.container.queue.release()
    failed = h.a.wait_backup(backup["id"], ("DELETE_FAILED",))
    assert failed["fail_reason"]
    start()
    assert h.a.delete(f"/backups/{backup['id']}").status_code == 202
    h.wait_idle()
    assert h.a.get(f"/backups/{backup['id']}").status_code == 404
    store = backends(server)
    try:
        assert store.get("swift").list(f"{h.settings.default_container}/{backup['id']}/") == []
    finally:
        store.close()


def test_wrong_swift_key_is_a_clear_startup_error(tmp_path, swift_server):
    import json

    env = dict(os.environ)
    wrong = "wrong-" + uuid.uuid4().hex
    env["STRONGROOM_STORES"] = json.dumps([swift_store(swift_server, key=wrong)])
    env["STRONGROOM_DATASTORES"] = '["sqlite"]'
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "strongroom",
            "serve",
            "--port",
            "1",
            "--data-dir",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 2
    assert "cannot start: store 'swift' refused the configured credentials" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert wrong not in out.stderr + out.stdout
