"""Point-in-time restore through the API, with a real managed PostgreSQL server: the
/pitr policy, the archiver's batches in the service's store, the restorable window (split
by a pause in archiving), restores to times between known commits, and the refusals."""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fixtures.service import Caller, Harness, wait_for
from support.dashboard import browser, sign_in
from support.postgresql_service import PG_MAJOR, connect, postgresql_service, tcp
from support.service_calls import (
    archive_objects,
    backup,
    check_refused_in_gap,
    check_retention,
    fault_message,
    put,
    show,
    tick,
    wait_status,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]
APP_PASSWORD = "app-" + secrets.token_hex(8)
BACKUPS: dict[str, str] = {}  # backups the later tests delete


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with postgresql_service("strongroom-pitrapi-", datastores=["sqlite", "postgresql"]) as harness:
        assert harness.container.archiver is not None
        # The tests drive the archiver's passes themselves.
        harness.container.archiver.stop()
        yield harness


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


def between(earlier: tuple[datetime, datetime], later: tuple[datetime, datetime]) -> str:
    target = earlier[1] + (later[0] - earlier[1]) / 2
    return target.isoformat(timespec="microseconds") + "Z"


def restored_rows(h: Harness, name: str, restore_point: dict[str, Any]) -> list[int]:
    created = h.a.create_instance(
        name, datastore={"type": "postgresql"}, restorePoint=restore_point
    )
    view = wait_status(lambda: show(h.a, "instance", created["id"]), "ACTIVE")
    try:
        with connect(tcp(view["connection"], "app", APP_PASSWORD, "bench")) as c:
            return [r[0] for r in c.execute("SELECT n FROM ticks ORDER BY n")]
    finally:
        assert h.a.delete(f"/instances/{created['id']}").status_code == 202


@pytest.fixture(scope="module")
def source(h: Harness) -> dict[str, Any]:
    created = h.a.create_instance(
        "source",
        datastore={"type": "postgresql"},
        databases=[{"name": "bench"}],
        users=[{"name": "app", "password": APP_PASSWORD, "databases": [{"name": "bench"}]}],
    )
    view = wait_status(lambda: show(h.a, "instance", created["id"]), "ACTIVE")
    params = tcp(view["connection"], "app", APP_PASSWORD, "bench")
    with connect(params) as c:
        c.execute("CREATE TABLE ticks (n int PRIMARY KEY)")
    return {"id": created["id"], "params": params}


def test_policy_is_the_projects_own_and_checked(h: Harness, source: dict[str, Any]) -> None:
    path = f"/instances/{source['id']}/pitr"
    first = h.a.get(path)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "restorable_window": [],
        "pitr": {"enabled": False, "last_archived_at": None, "lag_seconds": None},
    }
    # Another project: neither sees nor changes it.
    assert h.b.get(path).status_code == 404
    assert put(h.b, path, {"pitr": {"enabled": True}}).status_code == 404
    assert h.a.get(f"/instances/{uuid.uuid4()}/pitr").status_code == 404
    # A reader of the project may look, not change (as for other instance writes).
    reader = Caller(h.client, h.a.project, h.token(h.a.project, "reader"))
    assert reader.get(path).status_code == 200
    assert put(reader, path, {"pitr": {"enabled": True}}).status_code == 403
    for bad in (
        {},
        {"pitr": {"enabled": "yes"}},
        {"pitr": {"enabled": True, "storage_driver": "nowhere"}},
        {"pitr": {"enabled": True, "container": "../elsewhere"}},
        ["pitr"],
    ):
        r = put(h.a, path, bad)
        assert r.status_code == 400, (bad, r.text)
    lite = h.a.create_instance("lite")
    r = put(h.a, f"/instances/{lite['id']}/pitr", {"pitr": {"enabled": True}})
    assert r.status_code == 400 and "not available" in fault_message(r)
    assert tick(h) == 0  # nothing enabled yet


def test_archive_window_and_restores_to_times(h: Harness, source: dict[str, Any]) -> None:
    path = f"/instances/{source['id']}/pitr"
    r = put(h.a, path, {"pitr": {"enabled": True, "storage_driver": "local"}})
    assert r.status_code == 200, r.text
    assert r.json()["pitr"]["enabled"] is True
    assert tick(h) == 1  # the slot is made and archiving begins
    # A pass killed while writing leaves chunks of a batch without a manifest or a row:
    # the next pass removes them.
    leftover = (
        Path(h.settings.data_dir)
        / "objects"
        / h.settings.default_container
        / source["id"]
        / "wal"
        / str(uuid.uuid4())
        / "chunk-00000000"
    )
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a batch")
    assert tick(h) == 1
    assert not leftover.exists()
    params = source["params"]
    full = backup(h.a, source["id"], "base")
    BACKUPS["base"] = full["id"]
    rows = [insert(params, n) for n in (1, 2)]
    assert tick(h) == 1
    rows += [insert(params, n) for n in (3, 4)]
    assert tick(h) == 1

    view = show(h.a, "instance", source["id"])
    (window,) = view["restorable_window"]
    assert view["pitr"]["enabled"] is True
    assert view["pitr"]["last_archived_at"] == window["to"]
    assert isinstance(view["pitr"]["lag_seconds"], float) and view["pitr"]["lag_seconds"] >= 0
    assert h.a.get(path).json()["restorable_window"] == [window]
    # Every stored object of the archive is under the instance's own archive prefix.
    store_root = Path(h.settings.data_dir) / "objects"
    archived = [
        p for p in store_root.rglob("*") if p.is_file() and f"/{source['id']}/wal/" in str(p)
    ]
    # Two batches (a chunk and a manifest each): the first, archived wholly before the
    # backup began, is needed by no backup and retention removed it.
    assert len(archived) == 4

    # From the instance: the newest backup before the time, then the archived WAL.
    assert restored_rows(
        h, "to-2", {"instanceRef": source["id"], "restoreTime": between(rows[1], rows[2])}
    ) == [1, 2]
    # From a named backup.
    assert restored_rows(
        h, "to-1", {"backupRef": full["id"], "restoreTime": between(rows[0], rows[1])}
    ) == [1]

    # Refusals: before the window, garbage, another project's source.
    early = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    body = {"name": "x", "datastore": {"type": "postgresql"}}
    for point, status, text in (
        ({"instanceRef": source["id"], "restoreTime": early}, 400, window["from"]),
        ({"backupRef": full["id"], "restoreTime": "yesterday"}, 400, "ISO 8601"),
        ({"instanceRef": source["id"], "restoreTime": "2026-12-06"}, 400, "ISO 8601"),
        ({"instanceRef": source["id"]}, 400, ""),
        ({"instanceRef": source["id"], "backupRef": full["id"], "restoreTime": early}, 400, ""),
    ):
        r = h.a.post("/instances", {"instance": dict(body, restorePoint=point)})
        assert r.status_code == status, r.text
        assert text in fault_message(r)
    r = h.b.post(
        "/instances",
        {"instance": dict(body, restorePoint={"instanceRef": source["id"], "restoreTime": early})},
    )
    assert r.status_code == 404, r.text


def test_a_pause_splits_the_window_and_a_time_in_it_is_refused(
    h: Harness, source: dict[str, Any]
) -> None:
    path = f"/instances/{source['id']}/pitr"
    params = source["params"]
    assert put(h.a, path, {"pitr": {"enabled": False}}).status_code == 200
    assert tick(h) == 0  # drops the slot
    unarchived = insert(params, 5)
    assert put(h.a, path, {"pitr": {"enabled": True}}).status_code == 200
    assert tick(h) == 1  # a new run
    BACKUPS["after-pause"] = backup(h.a, source["id"], "after-pause")["id"]
    insert(params, 6)
    assert tick(h) == 1
    view = show(h.a, "instance", source["id"])
    # The dashboard shows the window's two ranges on the instance's card.
    card = sign_in(browser(h), h.a.token).get("/dashboard").text
    card = card[card.index(f'data-instance-id="{source["id"]}"') :]
    shown = re.findall(r'<span class="window">([^<]+)</span>', card[: card.index("</div>")])
    assert shown == [
        f"{on_dashboard(r['from'])} to {on_dashboard(r['to'])}" for r in view["restorable_window"]
    ]
    check_refused_in_gap(h, source["id"], "postgresql", unarchived[1].isoformat() + "Z")


def on_dashboard(moment: str) -> str:
    return datetime.fromisoformat(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


def test_retention_keeps_the_archive_back_to_the_oldest_backup(
    h: Harness, source: dict[str, Any]
) -> None:
    check_retention(h, source["id"], oldest=BACKUPS["base"], newest=BACKUPS["after-pause"])


def test_a_deleted_instance_leaves_no_policy_behind(h: Harness, source: dict[str, Any]) -> None:
    path = f"/instances/{source['id']}/pitr"
    assert put(h.a, path, {"pitr": {"enabled": True}}).status_code == 200
    assert tick(h) == 1
    assert h.a.delete(f"/instances/{source['id']}").status_code == 202
    wait_for(lambda: h.a.get(f"/instances/{source['id']}").status_code == 404, timeout=60)
    assert h.a.get(path).status_code == 404
    assert tick(h) == 0
    with h.container.uow() as uow:
        assert uow.pitr.policy(source["id"]) is None
        assert uow.pitr.batches(source["id"]) == []
    assert archive_objects(h, source["id"]) == []
