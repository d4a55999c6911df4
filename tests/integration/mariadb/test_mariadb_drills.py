"""Restore drills of managed MariaDB backups through the API: the real service
in-process, a real managed server run as its own OS user, backups in the local store.

A good backup's drill records OK with CHECK TABLE's verdict and each table's rows
(a table with a hostile name among them, a stalling view left alone); a chunk of the
stored backup with one byte flipped, and a table damaged in the source before it was
backed up (every object intact, the table not), each record FAILED with a reason. After
each drill its instance's home, server and OS user are gone and the project's instances
are the ones it had. A schedule's drill_cron drills MariaDB backups.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fixtures.clocked import ManualClock, make_clocked_harness, scheduler_of
from fixtures.service import Caller, Harness, make_harness, wait_for
from strongroom.engines.base import Engine
from support.drill_homes import DrillHomes
from support.mariadb import (
    WAIT,
    Login,
    load_items,
    processes_mentioning,
    query,
    require_mariadb,
    scratch_root,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

APP_USER = "drillapp"
APP_PASSWORD = "drill-App-Pw-5e2a"
ROWS = 3000
ODD = "we`ird; drop table t; --"


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    require_mariadb()
    with scratch_root("sr-mdb-drill-") as base:
        harness = make_harness(base, datastores=["sqlite", "mariadb"])
        try:
            yield harness
        finally:
            harness.container.close()


def engine_of(h: Harness) -> Engine:
    catalog = h.container.services.datastores
    version = catalog.version_by_id(catalog.get("mariadb").default_version_id or "")
    return catalog.engine_for(version)


def show(caller: Caller, kind: str, ident: str) -> dict[str, Any]:
    r = caller.get(f"/{kind}s/{ident}")
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()[kind]
    return view


def wait_status(caller: Caller, kind: str, ident: str, wanted: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        view = show(caller, kind, ident)
        if view["status"] in ("ERROR", "FAILED"):
            raise AssertionError(f"{view.get('fault') or view.get('fail_reason')}")
        return view if view["status"] == wanted else None

    result: dict[str, Any] = wait_until(ready, f"{kind} {ident} {wanted}")
    return result


@pytest.fixture(scope="module")
def source(h: Harness) -> dict[str, Any]:
    """``app.items`` (ROWS rows), a table with a hostile name (3 rows) and an empty
    database ``other`` with one empty table."""
    created = h.a.create_instance(
        "drilled",
        datastore={"type": "mariadb"},
        databases=[{"name": "app"}, {"name": "other"}],
        users=[
            {
                "name": APP_USER,
                "password": APP_PASSWORD,
                "databases": [{"name": "app"}, {"name": "other"}],
            }
        ],
    )
    view = wait_status(h.a, "instance", created["id"], "ACTIVE")
    login = Login.from_view(view["connection"], APP_USER, APP_PASSWORD, "app")
    load_items(login, ROWS)
    odd = "`" + ODD.replace("`", "``") + "`"
    query(login, f"CREATE TABLE {odd} (x int) ENGINE=InnoDB")
    query(login, f"INSERT INTO {odd} VALUES (1), (2), (3)")
    query(login, "CREATE TABLE other.nothing (x int) ENGINE=InnoDB")
    # A view that would hold a count for an hour: the drill counts base tables only.
    query(login, "CREATE VIEW stall AS SELECT SLEEP(3600) AS s")
    return view


def take_backup(caller: Caller, instance_id: str, name: str) -> dict[str, Any]:
    created = caller.create_backup(instance_id, name)
    return wait_status(caller, "backup", created["id"], "COMPLETED")


@pytest.fixture
def homes(h: Harness, monkeypatch: pytest.MonkeyPatch) -> DrillHomes:
    return DrillHomes(engine_of(h), monkeypatch, processes_mentioning)


def drill(caller: Caller, backup_id: str) -> dict[str, Any]:
    r = caller.post(f"/backups/{backup_id}/drill")
    assert r.status_code == 202, r.text
    return drill_finished(caller, backup_id)


def drill_finished(caller: Caller, backup_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        b = show(caller, "backup", backup_id)
        return b if b["drill_status"] != "RUNNING" else None

    result: dict[str, Any] = wait_for(finished, timeout=WAIT)
    return result


def source_rows(view: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Each table's rows in the source, counted there."""
    login = Login.from_view(view["connection"], APP_USER, APP_PASSWORD, "app")
    counted: dict[str, dict[str, int]] = {}
    for db in ("app", "other"):
        for name, _kind in query(
            login, f"SHOW FULL TABLES FROM {db} WHERE Table_type = 'BASE TABLE'"
        ):
            quoted = "`" + str(name).replace("`", "``") + "`"
            ((count,),) = query(login, f"SELECT COUNT(*) FROM {db}.{quoted}")
            counted.setdefault(db, {})[str(name)] = int(count)
    return counted


def instance_ids(caller: Caller) -> list[str]:
    return sorted(i["id"] for i in caller.get("/instances").json()["instances"])


def test_a_good_backup_drills_ok_with_its_row_counts(
    h: Harness, source: dict[str, Any], homes: DrillHomes
) -> None:
    backup = take_backup(h.a, source["id"], "good")
    before = instance_ids(h.a)
    done = drill(h.a, backup["id"])
    assert done["drill_status"] == "OK", done["drill_error"]
    report = done["drill_report"]
    assert report["checks"] == {"check_table_extended": "ok"}
    assert report["rows"] == source_rows(source)
    assert report["rows"]["app"]["items"] == ROWS and report["rows"]["app"][ODD] == 3
    assert report["rows"]["other"] == {"nothing": 0}
    assert report["tables"] == sum(len(t) for t in report["rows"].values())
    homes.assert_gone()
    assert instance_ids(h.a) == before
    shown = show(h.a, "instance", source["id"])
    assert shown["last_restorable_backup_id"] == backup["id"]
    assert shown["last_verified_restorable_at"] == done["drilled_at"]


def test_a_backup_with_a_flipped_byte_fails_its_drill(
    h: Harness, source: dict[str, Any], homes: DrillHomes
) -> None:
    backup = take_backup(h.a, source["id"], "flipped")
    manifest = Path(backup["locationRef"].removeprefix("file://"))
    chunks = sorted(manifest.parent.glob("chunk-*"))
    chunk = chunks[len(chunks) // 2]
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))
    before = instance_ids(h.a)
    done = drill(h.a, backup["id"])
    assert done["drill_status"] == "FAILED"
    assert f"chunk {chunks.index(chunk)}" in done["drill_error"], done["drill_error"]
    assert "Traceback" not in done["drill_error"]
    assert done["drill_report"] is None
    homes.assert_gone()
    assert instance_ids(h.a) == before


def test_drill_cron_drills_a_mariadb_schedules_newest_backup() -> None:
    clock = ManualClock(datetime(2031, 3, 2))  # a Sunday
    with scratch_root("sr-mdb-drillcron-") as base:
        hc = make_clocked_harness(base, clock, datastores=["sqlite", "mariadb"])
        try:
            created = hc.a.create_instance(
                "scheduled",
                datastore={"type": "mariadb"},
                databases=[{"name": "app"}],
                users=[
                    {"name": APP_USER, "password": APP_PASSWORD, "databases": [{"name": "app"}]}
                ],
            )
            view = wait_status(hc.a, "instance", created["id"], "ACTIVE")
            login = Login.from_view(view["connection"], APP_USER, APP_PASSWORD, "app")
            query(login, "CREATE TABLE t ENGINE=InnoDB AS SELECT seq FROM seq_1_to_77")
            body = {
                "backup_schedule": {
                    "instance_id": created["id"],
                    "name": "nightly",
                    "cron": "0 3 * * *",
                    "drill_cron": "0 5 * * 0",
                }
            }
            r = hc.a.post("/backup_schedules", body)
            assert r.status_code in (200, 201, 202), r.text
            schedule_id = r.json()["backup_schedule"]["id"]
            clock.set(datetime(2031, 3, 2, 3))
            assert scheduler_of(hc).tick() == 1
            backup_id = show(hc.a, "backup_schedule", schedule_id)["last_backup_id"]
            wait_status(hc.a, "backup", backup_id, "COMPLETED")
            clock.set(datetime(2031, 3, 2, 5))
            assert scheduler_of(hc).drills() == 1
            done = drill_finished(hc.a, backup_id)
            assert done["drill_status"] == "OK", done["drill_error"]
            assert done["drill_report"]["rows"] == {"app": {"t": 77}}
            assert show(hc.a, "instance", created["id"])["last_restorable_backup_id"] == backup_id
        finally:
            hc.container.close()


def opened_connection(h: Harness, instance_id: str) -> dict[str, Any]:
    """The instance's sealed connection, opened as the service opens it."""
    with h.container.uow() as uow:
        sealed = uow.instances.sealed_connection(instance_id)
    assert sealed is not None
    opened: dict[str, Any] = h.container.handlers._secrets.open(sealed, bound_to=instance_id)
    return opened


def test_a_table_damaged_in_the_source_fails_the_drill_through_check_table(
    h: Harness, homes: DrillHomes
) -> None:
    created = h.a.create_instance(
        "damaged",
        datastore={"type": "mariadb"},
        databases=[{"name": "app"}],
        users=[{"name": APP_USER, "password": APP_PASSWORD, "databases": [{"name": "app"}]}],
    )
    view = wait_status(h.a, "instance", created["id"], "ACTIVE")
    login = Login.from_view(view["connection"], APP_USER, APP_PASSWORD, "app")
    # MyISAM: mariabackup copies its files as they are, so the backup's objects are
    # intact while the table in them is not.
    query(
        login,
        "CREATE TABLE m (id INT PRIMARY KEY, v CHAR(100) NOT NULL, KEY (v)) ENGINE=MyISAM",
    )
    query(login, "INSERT INTO m SELECT seq, SHA2(seq, 256) FROM seq_1_to_5000")
    home = h.container.handlers.home_of(created["id"])
    engine = engine_of(h)
    connection = opened_connection(h, created["id"])
    engine.stop_instance(home, connection)
    data_file = home / "data" / "app" / "m.MYD"
    size = data_file.stat().st_size
    with open(data_file, "r+b") as f:
        f.seek(size // 2)
        f.write(random.Random(3).randbytes(4096))
    engine.start_instance(home, connection)
    backup = take_backup(h.a, created["id"], "damaged table")
    done = drill(h.a, backup["id"])
    assert done["drill_status"] == "FAILED", done
    assert "CHECK TABLE" in done["drill_error"] and "app.m" in done["drill_error"], done
    assert APP_PASSWORD not in done["drill_error"]
    homes.assert_gone()
    assert show(h.a, "instance", created["id"])["last_restorable_backup_id"] is None
