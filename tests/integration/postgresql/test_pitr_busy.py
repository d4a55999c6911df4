"""A busy server writes more WAL between two passes than one batch takes: the pass takes
it in several batches, one after another, and a restore to a time later finds the batch
its backup ends in, though that batch, stopped short, carries an older coverage time."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from fixtures.service import Harness
from strongroom.engines.postgresql import archiver
from support.postgresql_service import PG_MAJOR, connect, postgresql_service, tcp
from support.service_calls import backup, put, show, tick, wait_status

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]
PASSWORD = "app-" + secrets.token_hex(8)
SEGMENT = 16 << 20
SWITCHES = 3  # segments of WAL written between two passes, each one batch's span


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with postgresql_service("strongroom-pitrbusy-", datastores=["sqlite", "postgresql"]) as harness:
        assert harness.container.archiver is not None
        harness.container.archiver.stop()  # the test drives the passes itself
        yield harness


def server_now(params: dict[str, Any]) -> datetime:
    with connect(params) as c:
        row = c.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    stamp: datetime = row[0]
    return stamp.astimezone(UTC).replace(tzinfo=None)


def test_a_pass_catches_up_in_several_batches_and_a_restore_finds_its_start(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archiver, "BATCH_SPAN", SEGMENT, raising=False)
    created = h.a.create_instance(
        "busy",
        datastore={"type": "postgresql"},
        databases=[{"name": "bench"}],
        users=[{"name": "app", "password": PASSWORD, "databases": [{"name": "bench"}]}],
        root_enabled=True,
    )
    view = wait_status(lambda: show(h.a, "instance", created["id"]), "ACTIVE")
    params = tcp(view["connection"], "app", PASSWORD, "bench")
    with connect(params) as c:
        c.execute("CREATE TABLE ticks (n int PRIMARY KEY)")
    r = put(h.a, f"/instances/{created['id']}/pitr", {"pitr": {"enabled": True}})
    assert r.status_code == 200, r.text
    assert tick(h) == 1
    full = backup(h.a, created["id"], "base")

    # Segments of WAL after the backup's end: each switch fills the rest of a segment.
    superuser = tcp(view["connection"], *root_login(h, created["id"]), "bench")
    with connect(superuser) as c:
        for n in range(SWITCHES):
            c.execute("INSERT INTO ticks VALUES (%s)", (n,))
            c.execute("SELECT pg_switch_wal()")
    with connect(params) as c:
        c.execute("INSERT INTO ticks VALUES (100)")
    committed = server_now(params)

    stored = tick(h)
    assert stored > 1, "the pass took one batch and left the rest for later passes"
    with h.container.uow() as uow:
        batches = uow.pitr.batches(created["id"])
    assert batches[-1].archived_through >= committed  # caught up, to the marker

    when = committed.isoformat(timespec="microseconds") + "Z"
    restored = h.a.create_instance(
        "to-the-end",
        datastore={"type": "postgresql"},
        restorePoint={"backupRef": full["id"], "restoreTime": when},
    )
    done = wait_status(lambda: show(h.a, "instance", restored["id"]), "ACTIVE")
    with connect(tcp(done["connection"], "app", PASSWORD, "bench")) as c:
        rows = [r[0] for r in c.execute("SELECT n FROM ticks ORDER BY n")]
    assert rows == [*range(SWITCHES), 100]


def root_login(h: Harness, instance_id: str) -> tuple[str, str]:
    r = h.a.post(f"/instances/{instance_id}/root")
    assert r.status_code == 200, r.text
    user = r.json()["user"]
    return str(user["name"]), str(user["password"])
