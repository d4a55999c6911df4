"""`strongroom key rotate` covers the point-in-time archive: a managed PostgreSQL server
archived, the service stopped, the key rotated; every archived batch's manifest is then
under the new key (and opens with no other), the archiver goes on with the instance's
re-sealed connection, and a restore to a time between two commits has exactly the earlier
rows. A catalog rebuild over the same store imports no archive object as a backup."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fixtures.service import Harness, make_harness
from strongroom.bootstrap import build_checker, build_recovery
from strongroom.offline.catalog import rebuild
from strongroom.offline.recovery_commands import _targets
from strongroom.offline.rotation import rotate
from strongroom.pipeline.errors import FormatError
from strongroom.pipeline.keys import MasterKey
from strongroom.pipeline.reader import open_manifest
from strongroom.services import object_layout
from support.postgresql_service import PG_MAJOR, connect, reachable_dir, tcp, wait_status

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]


def server_now(params: dict[str, Any]) -> datetime:
    with connect(params) as c:
        row = c.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    stamp: datetime = row[0]
    return stamp.astimezone(UTC).replace(tzinfo=None)


def insert(params: dict[str, Any], n: int) -> tuple[datetime, datetime]:
    """Row ``n``, bracketed by the server's clock before it starts and after it commits."""
    before = server_now(params)
    with connect(params) as c:
        c.execute("INSERT INTO ticks VALUES (%s)", (n,))
    after = server_now(params)
    time.sleep(0.05)  # spaces the commits apart so a target can fall between two
    return before, after


def view(h: Harness, kind: str, ident: str) -> dict[str, Any]:
    r = h.a.get(f"/{kind}s/{ident}")
    assert r.status_code == 200, r.text
    return dict(r.json()[kind])


def archive_manifests(h: Harness, instance_id: str) -> dict[str, bytes]:
    """Batch id → its manifest's bytes, from the local store's files."""
    root = Path(h.settings.data_dir) / "objects"
    found = {}
    for path in root.rglob("manifest.json"):
        parsed = object_layout.parse_archive(path.relative_to(root).as_posix())
        if parsed is not None and parsed.instance_id == instance_id:
            found[parsed.batch_id] = path.read_bytes()
    return found


def opens_with(raw: bytes, batch_id: str, *keys: MasterKey) -> list[str]:
    opened = []
    for key in keys:
        try:
            open_manifest(raw, key, expected_backup_id=batch_id)
        except FormatError:
            continue
        opened.append(key.key_id)
    return opened


def test_rotation_rewrites_the_archive_and_a_restore_to_a_time_still_works() -> None:
    password = "app-" + secrets.token_hex(8)
    with reachable_dir("strongroom-pitr-rotate-") as base:
        root = base / "service"
        root.mkdir(mode=0o711)
        h = make_harness(root, datastores=["sqlite", "postgresql"], engine_timeout=120)
        assert h.container.archiver is not None
        h.container.archiver.stop()  # the test drives the archiver's passes
        created = h.a.create_instance(
            "source",
            datastore={"type": "postgresql"},
            databases=[{"name": "bench"}],
            users=[{"name": "app", "password": password, "databases": [{"name": "bench"}]}],
        )
        source = created["id"]
        active = wait_status(lambda: view(h, "instance", source), "ACTIVE")
        params = tcp(active["connection"], "app", password, "bench")
        with connect(params) as c:
            c.execute("CREATE TABLE ticks (n int PRIMARY KEY)")
        r = h.a.client.put(
            h.a.url(f"/instances/{source}/pitr"),
            json={"pitr": {"enabled": True}},
            headers=h.a._headers(None),
        )
        assert r.status_code == 200, r.text
        assert h.container.archiver.tick() == 1
        full = h.a.create_backup(source, "base")
        wait_status(lambda: view(h, "backup", full["id"]), "COMPLETED")
        first, second = insert(params, 1), insert(params, 2)
        assert h.container.archiver.tick() == 1
        old = MasterKey.load(h.settings.key_file)
        batches = archive_manifests(h, source)
        assert batches and all(
            opens_with(raw, bid, old) == [old.key_id] for bid, raw in batches.items()
        )
        h.container.close()

        # The service stopped: rotate, as `strongroom key rotate` does.
        sessions, uow, stores = build_recovery(h.settings, old)
        try:
            targets = _targets(uow, stores, h.settings, [])
            # Each recorded batch is rewritten even when a store's listing lags behind.
            container = h.settings.default_container
            assert {
                object_layout.archive_manifest_key(container, source, bid) for bid in batches
            } <= set(targets["local"].known)
            report = rotate(key_file=h.settings.key_file, stores=targets, sessions=sessions)
            new = MasterKey.load(h.settings.key_file)
            assert report.finished and not report.problems and new != old
            rewritten = {w.rsplit("/", 2)[-2] for w in report.rewritten}
            assert set(batches) <= rewritten and full["id"] in rewritten
            assert report.resealed >= 1  # the instance's connection, which the archiver uses
            # A catalog rebuild over the same container: the backup is already there, and
            # no archived batch is taken for a backup (nor reported as a bad one).
            rebuilt = rebuild(
                store_name="local",
                store=stores.backend("local"),
                containers=[h.settings.default_container],
                key=new,
                uow=uow,
                sessions=sessions,
                host=h.settings.host_id,
            )
            assert rebuilt.imported == [] and rebuilt.skipped == {}
            assert rebuilt.present == [full["id"]]
        finally:
            stores.close()
        after = archive_manifests(h, source)
        assert set(after) == set(batches)
        for batch_id, raw in after.items():
            assert opens_with(raw, batch_id, old, new) == [new.key_id], batch_id

        h = make_harness(root, datastores=["sqlite", "postgresql"], engine_timeout=120)
        try:
            assert h.container.archiver is not None
            h.container.archiver.stop()
            # The archiver still reaches the server (its sealed connection was re-sealed).
            assert h.container.archiver.tick() == 1
            assert build_checker(h.settings).run().orphaned == {}
            target = first[1] + (second[0] - first[1]) / 2
            restore_point = {
                "instanceRef": source,
                "restoreTime": target.isoformat(timespec="microseconds") + "Z",
            }
            restored = h.a.create_instance(
                "to-1", datastore={"type": "postgresql"}, restorePoint=restore_point
            )
            ready = wait_status(lambda: view(h, "instance", restored["id"]), "ACTIVE")
            with connect(tcp(ready["connection"], "app", password, "bench")) as c:
                assert [r[0] for r in c.execute("SELECT n FROM ticks ORDER BY n")] == [1]
        finally:
            h.container.close()
