"""`strongroom key rotate`: backups taken through the service (two projects, chains, a
`restore_from` registration, managed instances whose connections are sealed), the
rotation killed with SIGKILL in the middle (after two manifests, with the third one
journaled but not yet written), every manifest then whole under one of the two keys and
the service refusing to start; run again, it finishes: every backup restores with the
new key through the API and offline, none with the old one, and the instances still
work (their sealed connections were re-sealed)."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from recovery_support import (
    Taken,
    command,
    environment,
    restore_and_read,
    rows,
    run,
    take_sqlite_chain,
    write_config,
)

from fixtures.service import make_harness
from strongroom.bootstrap import StartupError
from strongroom.pipeline.errors import FormatError
from strongroom.pipeline.keys import MasterKey, rotation_journal, rotation_key
from strongroom.pipeline.reader import open_manifest
from strongroom.storage.errors import TransientStorageError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def manifests(objects: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in objects.glob("*/manifest.json")}


def opens_with(raw: bytes, *keys: MasterKey) -> list[str]:
    opened = []
    for key in keys:
        try:
            open_manifest(raw, key)
        except FormatError:
            continue
        opened.append(key.key_id)
    return opened


def register(h: Any, location: str) -> dict[str, Any]:
    version = h.a.get("/datastores/sqlite").json()["datastore"]["default_version"]
    body = {
        "backup": {
            "name": "imported",
            "restore_from": {
                "remote_location": location,
                "local_datastore_version_id": version,
                "size": 0.1,
            },
        }
    }
    r = h.a.post("/backups", body)
    assert r.status_code == 202, r.text
    registered: dict[str, Any] = r.json()["backup"]
    return registered


def test_key_rotation_killed_halfway_resumes_and_every_backup_restores(tmp_path: Path) -> None:
    h = make_harness(tmp_path, chunk_size=64 * 1024)
    taken = Taken()
    take_sqlite_chain(h, "a", "app", taken, links=3)
    take_sqlite_chain(h, "b", "other", taken, links=2)
    registered = register(h, taken.backups["app-1"]["locationRef"])
    taken.expected[registered["id"]] = taken.expected[taken.backups["app-1"]["id"]]
    taken.owner[registered["id"]] = "a"
    data = h.settings.data_dir
    key_file = h.settings.key_file
    objects = data / "objects" / "database-backups"
    old = MasterKey.load(key_file)
    kept_old = tmp_path / "old.key"
    kept_old.write_bytes(key_file.read_bytes())
    chunks_before = {p: p.read_bytes() for p in objects.glob("*/chunk-*")}
    h.container.close()

    config = write_config(tmp_path / "strongroom.toml", data)
    rotating = subprocess.Popen(
        command("key", "rotate", "--config", config),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment({"STRONGROOM_TEST_ROTATE_PAUSE_AFTER": "2"}),
    )
    assert rotating.stdout is not None
    said = []
    for line in rotating.stdout:
        said.append(line.strip())
        if line.strip() == "paused":
            break
    rotating.send_signal(signal.SIGKILL)
    rotating.wait(timeout=30)
    assert said[-1] == "paused", (said, rotating.stderr and rotating.stderr.read())
    assert sum(s.startswith("rewrote ") for s in said) == 2

    # Halfway: the old key still in place, the new one waiting, the journal kept.
    new = MasterKey.load(rotation_key(key_file))
    assert MasterKey.load(key_file) == old
    assert rotation_journal(key_file).exists()
    halfway = manifests(objects)
    under = [opens_with(raw, old, new) for raw in halfway.values()]
    assert all(len(u) == 1 for u in under), "a manifest under neither key"
    assert sum(u == [new.key_id] for u in under) == 2
    with pytest.raises(StartupError, match="rotation is unfinished"):
        make_harness(tmp_path, chunk_size=64 * 1024)
    not_now = run("catalog", "rebuild", "--store", "local", "--config", config)
    assert not_now.returncode == 2 and "rotation is unfinished" in not_now.stdout

    done = run("key", "rotate", "--config", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"master key is now {new.key_id} (was {old.key_id})" in done.stdout
    assert "1 registrations updated" in done.stdout
    assert MasterKey.load(key_file) == new
    assert key_file.stat().st_mode & 0o777 == 0o600
    for secret in (old.to_base64(), new.to_base64()):
        assert secret not in done.stdout + done.stderr + "".join(said)
    assert not rotation_journal(key_file).exists() and not rotation_key(key_file).exists()

    after = manifests(objects)
    assert set(after) == set(halfway)
    for backup_id, raw in after.items():
        assert opens_with(raw, old, new) == [new.key_id], backup_id
        manifest = json.loads(raw)
        if manifest["parent_id"]:
            parent = hashlib.sha256(after[manifest["parent_id"]]).hexdigest()
            assert manifest["parent_manifest_sha256"] == parent
    # No chunk was rewritten.
    assert {p: p.read_bytes() for p in objects.glob("*/chunk-*")} == chunks_before

    tip = taken.backups["app-2"]
    refused = run(
        "restore", "--from", tip["locationRef"], "--key", kept_old, "--to", tmp_path / "x.db"
    )
    assert refused.returncode == 1 and "encrypted with master key" in refused.stderr
    offline = tmp_path / "offline.db"
    restored = run("restore", "--from", tip["locationRef"], "--key", key_file, "--to", offline)
    assert restored.returncode == 0, restored.stderr
    assert rows(offline) == taken.expected[tip["id"]]

    h2 = make_harness(tmp_path, chunk_size=64 * 1024)
    try:
        for backup_id, expected in taken.expected.items():
            assert restore_and_read(h2.callers[taken.owner[backup_id]], backup_id) == expected
        # The instance's sealed connection opens with the new key: it backs up again,
        # an incremental on top of a rewritten chain.
        app = taken.instances["app"]
        more = h2.a.create_backup(app, "after", incremental=1)
        assert h2.a.wait_backup(more["id"])["parent_id"] == tip["id"]
    finally:
        h2.container.close()


class HidingListing:
    """A store whose listing lags behind (as Swift's may): it leaves out one key."""

    def __init__(self, inner: Any, hidden: str) -> None:
        self._inner = inner
        self._hidden = hidden

    def list(self, prefix: str) -> list[str]:
        return [k for k in self._inner.list(prefix) if k != self._hidden]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_rotation_rewrites_the_manifests_the_metadata_knows_when_the_listing_lags(
    tmp_path: Path,
) -> None:
    from strongroom.bootstrap import build_recovery
    from strongroom.offline.recovery_commands import _targets
    from strongroom.offline.rotation import StoreToRotate, rotate

    h = make_harness(tmp_path, chunk_size=64 * 1024)
    taken = Taken()
    take_sqlite_chain(h, "a", "app", taken, links=2)
    h.container.close()
    settings = h.settings
    old = MasterKey.load(settings.key_file)
    sessions, uow, stores = build_recovery(settings, old)
    try:
        hidden = f"database-backups/{taken.backups['app-1']['id']}/manifest.json"
        targets = _targets(uow, stores, settings, [])
        local = targets["local"]
        targets["local"] = StoreToRotate(
            HidingListing(local.backend, hidden), local.containers, local.known
        )
        report = rotate(key_file=settings.key_file, stores=targets, sessions=sessions)
        assert report.finished and f"local:{hidden}" in report.rewritten
        new = MasterKey.load(settings.key_file)
        assert opens_with(stores.backend("local").get(hidden), old, new) == [new.key_id]
    finally:
        stores.close()


class RefusingPut:
    """A store that refuses to write one key (a store error in the middle of a run)."""

    def __init__(self, inner: Any, refused: str) -> None:
        self._inner = inner
        self._refused = refused

    def put(self, key: str, data: bytes) -> None:
        if key == self._refused:
            raise TransientStorageError(f"{key}: the store is busy")
        self._inner.put(key, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_store_error_keeps_the_old_key_and_a_second_run_finishes(tmp_path: Path) -> None:
    from strongroom.bootstrap import build_recovery
    from strongroom.offline.recovery_commands import _targets
    from strongroom.offline.rotation import RotationError, StoreToRotate, rotate

    h = make_harness(tmp_path, chunk_size=64 * 1024)
    taken = Taken()
    take_sqlite_chain(h, "a", "app", taken, links=3)
    h.container.close()
    settings = h.settings
    old = MasterKey.load(settings.key_file)
    sessions, uow, stores = build_recovery(settings, old)
    try:
        middle = f"database-backups/{taken.backups['app-1']['id']}/manifest.json"
        targets = _targets(uow, stores, settings, [])
        local = targets["local"]
        failing = dict(targets)
        failing["local"] = StoreToRotate(
            RefusingPut(local.backend, middle), local.containers, local.known
        )
        with pytest.raises(RotationError, match="still under the old key"):
            rotate(key_file=settings.key_file, stores=failing, sessions=sessions)
        assert MasterKey.load(settings.key_file) == old
        assert rotation_journal(settings.key_file).exists()

        report = rotate(key_file=settings.key_file, stores=targets, sessions=sessions)
        assert report.finished and report.already == 1  # the full: the first run rewrote it
        new = MasterKey.load(settings.key_file)
        assert new != old and not rotation_journal(settings.key_file).exists()
    finally:
        stores.close()
    h2 = make_harness(tmp_path, chunk_size=64 * 1024)
    try:
        for backup_id, expected in taken.expected.items():
            assert restore_and_read(h2.a, backup_id) == expected
    finally:
        h2.container.close()
