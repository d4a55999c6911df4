"""Key rotation and catalog rebuild against a real Swift: SQLite chains of two projects
taken through the service into Swift, the master key rotated (manifests rewritten in
Swift, the old key refused offline), the metadata database then lost and the catalog
rebuilt from the Swift container; every backup restores through the API row for row."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from fixtures.service import make_harness, wait_for
from fixtures.swift import SwiftServer
from integration.offline.recovery_support import (
    Taken,
    restore_and_read,
    run,
    stop_and_forget,
    take_sqlite_chain,
    write_config,
)
from strongroom.pipeline.errors import WrongKeyError
from strongroom.pipeline.keys import MasterKey
from strongroom.pipeline.reader import open_manifest
from strongroom.storage.config import SwiftStoreConfig
from strongroom.storage.registry import build_backend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_rotation_then_rebuild_from_swift(tmp_path: Path, swift_server: SwiftServer) -> None:
    entry = {
        "name": "swift",
        "kind": "swift",
        "auth_url": swift_server.auth_url,
        "auth_version": "1",
        "user": swift_server.user,
        "key": swift_server.key,
    }
    container = "c-" + uuid.uuid4().hex[:12]
    settings = {
        "stores": [entry],
        "default_store": "swift",
        "default_container": container,
        "chunk_size": 64 * 1024,
    }
    h = make_harness(tmp_path, **settings)
    taken = Taken()
    take_sqlite_chain(h, "a", "app", taken, links=2)
    take_sqlite_chain(h, "b", "other", taken, links=1)
    old = MasterKey.load(h.settings.key_file)
    # Swift may update a container's listing after the write returns; a rebuild reads
    # what the listing holds, so the scenario starts once it holds every backup.
    listing = h.container.stores.backend("swift")
    wanted = {f"{container}/{b['id']}/manifest.json" for b in taken.backups.values()}
    wait_for(lambda: wanted <= set(listing.list(f"{container}/")))
    kept_old = tmp_path / "old.key"
    kept_old.write_bytes(h.settings.key_file.read_bytes())
    h.container.close()

    config = write_config(
        tmp_path / "strongroom.toml", h.settings.data_dir, [entry], default_container=container
    )
    rotated = run("key", "rotate", "--config", config)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    assert "3 manifests rewritten" in rotated.stdout
    new = MasterKey.load(h.settings.key_file)
    assert new != old
    swift = build_backend(
        SwiftStoreConfig(
            name="swift",
            auth_url=swift_server.auth_url,
            auth_version="1",
            user=swift_server.user,
            key=swift_server.key,
        )
    )
    try:
        for view in taken.backups.values():
            key = f"{container}/{view['id']}/manifest.json"
            open_manifest(swift.get(key), new, expected_backup_id=view["id"])
            with pytest.raises(WrongKeyError):
                open_manifest(swift.get(key), old)
    finally:
        swift.close()
    store_config = tmp_path / "store.toml"
    store_config.write_text(
        "[[stores]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in entry.items())
    )
    refused = run(
        "restore",
        "--from",
        taken.backups["app-1"]["locationRef"],
        "--key",
        kept_old,
        "--store-config",
        store_config,
        "--to",
        tmp_path / "x.db",
    )
    assert refused.returncode == 1 and "encrypted with master key" in refused.stderr

    stop_and_forget(h)
    rebuilt = run("catalog", "rebuild", "--store", "swift", "--config", config)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "imported 3 backups and 2 detached instances" in rebuilt.stdout

    h2 = make_harness(tmp_path, **settings)
    try:
        for backup_id, expected in taken.expected.items():
            caller = h2.callers[taken.owner[backup_id]]
            shown = caller.get(f"/backups/{backup_id}").json()["backup"]
            assert shown["locationRef"].startswith("http")
            assert restore_and_read(caller, backup_id) == expected
    finally:
        h2.container.close()
