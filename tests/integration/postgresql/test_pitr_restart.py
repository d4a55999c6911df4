"""Archiving survives a restart of the service: the new process goes on from the position
the catalog recorded (the slot kept the WAL meanwhile), so the window stays one range and
commits made while the service was down are archived."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from fixtures.service import make_harness
from strongroom.api.app import create_app
from strongroom.bootstrap import build
from support.postgresql_service import PG_MAJOR, connect, reachable_dir, tcp, wait_status

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]


def test_archiving_resumes_after_a_restart_without_a_gap() -> None:
    password = "app-" + secrets.token_hex(8)
    with reachable_dir("strongroom-pitr-restart-") as base:
        root = base / "service"
        root.mkdir(mode=0o711)
        h = make_harness(root, datastores=["sqlite", "postgresql"], engine_timeout=120)
        assert h.container.archiver is not None
        h.container.archiver.stop()
        created = h.a.create_instance(
            "source",
            datastore={"type": "postgresql"},
            databases=[{"name": "bench"}],
            users=[{"name": "app", "password": password, "databases": [{"name": "bench"}]}],
        )
        instance_id = created["id"]

        def view() -> dict[str, Any]:
            return dict(h.a.get(f"/instances/{instance_id}").json()["instance"])

        params = tcp(wait_status(view, "ACTIVE")["connection"], "app", password, "bench")
        with connect(params) as c:
            c.execute("CREATE TABLE ticks (n int PRIMARY KEY)")
        r = h.a.client.put(
            h.a.url(f"/instances/{instance_id}/pitr"),
            json={"pitr": {"enabled": True}},
            headers=h.a._headers(None),
        )
        assert r.status_code == 200, r.text
        assert h.container.archiver.tick() == 1
        h.a.create_backup(instance_id, "base")
        wait_status(lambda: h.a.get("/backups").json()["backups"][0], "COMPLETED")
        with connect(params) as c:
            c.execute("INSERT INTO ticks VALUES (1)")
        assert h.container.archiver.tick() == 1
        with h.container.uow() as uow:
            before = uow.pitr.batches(instance_id)
        h.container.close()

        with connect(params) as c:  # committed while the service is down
            c.execute("INSERT INTO ticks VALUES (2)")
        h.container = build(h.settings, run_scheduler=False)
        h.client.app = create_app(h.container.services)
        try:
            assert h.container.archiver is not None
            assert h.container.archiver.tick() == 1
            with h.container.uow() as uow:
                after = uow.pitr.batches(instance_id)
            # (the first batch, wholly before the backup, went to retention)
            assert after[-2] == before[-1]
            assert after[-1].start == before[-1].stop
            (window,) = view()["restorable_window"]
            assert window["to"] > (before[-1].archived_through.isoformat() + "Z")
        finally:
            h.container.close()
