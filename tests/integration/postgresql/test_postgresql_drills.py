"""Restore drills of managed PostgreSQL backups through the API: the real service
in-process, a real managed server, its backups in the local store.

A good backup's drill records OK with pg_amcheck's verdict and each table's rows (rows a
policy hides counted, a stalling view left alone); a chunk of the stored backup with one
byte flipped, and a table whose page was overwritten with garbage in the source before it
was backed up (every object intact, the data not), each record FAILED with a reason.
After every drill, its instance's home and OS user are gone, no server runs there, and
the project's instances are the ones it had; what a dead drill left is removed by the
next. A schedule's drill_cron drills PostgreSQL backups; reports stop at 1,000 tables. A
stored file-level backup whose WAL lacks the first page of its redo point's segment (the
shape taken before the WAL window started at the segment) drills OK.
"""

from __future__ import annotations

import itertools
import pwd
import random
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fixtures.clocked import ManualClock, make_clocked_harness, scheduler_of
from fixtures.service import Caller, Harness, wait_for
from strongroom.engines.base import Engine, InstanceRequest
from strongroom.engines.identity import InstanceIdentity, name_for
from strongroom.engines.postgresql import wal_header
from support.drill_homes import DrillHomes
from support.postgresql_service import (
    PG_MAJOR,
    WAIT,
    connect,
    postgresql_service,
    reachable_dir,
    server_processes,
    tcp,
    wait_status,
)
from support.postgresql_wal_head import (
    BATCH_ROWS,
    FILLER_TABLE,
    filler_prefixes,
    until_past_first_page,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]

APP_PASSWORD = "app-drill-Pw-71c3"
ODD = 'we"ird; drop table t; --'
ROWS = 5000


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with postgresql_service("strongroom-pgdrill-", datastores=["sqlite", "postgresql"]) as harness:
        yield harness


def engine_of(h: Harness) -> Engine:
    catalog = h.container.services.datastores
    return catalog.engine_for(
        catalog.version_by_id(catalog.get("postgresql").default_version_id or "")
    )


def show(caller: Caller, kind: str, ident: str) -> dict[str, Any]:
    r = caller.get(f"/{kind}s/{ident}")
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()[kind]
    return view


def app_params(view: dict[str, Any]) -> dict[str, Any]:
    return tcp(view["connection"], "app", APP_PASSWORD, "app")


@pytest.fixture(scope="module")
def source(h: Harness) -> dict[str, Any]:
    """A managed server whose ``app`` database holds ``t`` (ROWS rows, indexed), a table
    with a hostile name (3 rows) and a table in another schema (2 rows)."""
    created = h.a.create_instance(
        "drilled",
        datastore={"type": "postgresql"},
        databases=[{"name": "app"}],
        users=[{"name": "app", "password": APP_PASSWORD, "databases": [{"name": "app"}]}],
    )
    view = wait_status(lambda: show(h.a, "instance", created["id"]), "ACTIVE")
    with connect(app_params(view)) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, body text NOT NULL)")
        c.execute(
            "INSERT INTO t SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, %s) g",
            (ROWS,),
        )
        c.execute(f'CREATE TABLE "{ODD.replace(chr(34), chr(34) * 2)}" (x int)')
        c.execute(f'INSERT INTO "{ODD.replace(chr(34), chr(34) * 2)}" VALUES (1), (2), (3)')
        c.execute("CREATE SCHEMA other")
        c.execute("CREATE TABLE other.u AS SELECT 1 AS a UNION ALL SELECT 2")
        # Rows hidden from everyone but a superuser: the drill counts them all.
        c.execute("CREATE TABLE hidden AS SELECT g FROM generate_series(1, 4) g")
        c.execute("ALTER TABLE hidden ENABLE ROW LEVEL SECURITY")
        c.execute("ALTER TABLE hidden FORCE ROW LEVEL SECURITY")
        c.execute("CREATE POLICY nothing ON hidden USING (false)")
        # A view that would hold a count for an hour: the drill counts tables only.
        c.execute("CREATE VIEW stall AS SELECT pg_sleep(3600) IS NULL AS s")
    return view


def take_backup(caller: Caller, instance_id: str, name: str) -> dict[str, Any]:
    created = caller.create_backup(instance_id, name)
    view: dict[str, Any] = wait_status(lambda: show(caller, "backup", created["id"]), "COMPLETED")
    return view


@pytest.fixture
def homes(h: Harness, monkeypatch: pytest.MonkeyPatch) -> DrillHomes:
    return DrillHomes(engine_of(h), monkeypatch, server_processes)


def drill(caller: Caller, backup_id: str) -> dict[str, Any]:
    r = caller.post(f"/backups/{backup_id}/drill")
    assert r.status_code == 202, r.text
    return drill_finished(caller, backup_id)


def drill_finished(caller: Caller, backup_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        b: dict[str, Any] = show(caller, "backup", backup_id)
        return b if b["drill_status"] != "RUNNING" else None

    result: dict[str, Any] = wait_for(finished, timeout=WAIT)
    return result


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
    assert report["checks"] == {"pg_amcheck": "ok"}
    assert report["rows"]["app"] == {
        "other.u": 2,
        "public.hidden": 4,
        f"public.{ODD}": 3,
        "public.t": ROWS,
    }
    assert report["rows"]["postgres"] == {}
    assert report["tables"] == 4
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


def relation_file(view: dict[str, Any], table: str) -> Path:
    with connect(app_params(view)) as c:
        row = c.execute("SELECT pg_relation_filepath(%s::regclass)", (table,)).fetchone()
    assert row is not None
    return Path(row[0])


def test_a_table_page_overwritten_in_the_source_fails_the_drill_through_pg_amcheck(
    h: Harness, homes: DrillHomes
) -> None:
    created = h.a.create_instance(
        "damaged",
        datastore={"type": "postgresql"},
        databases=[{"name": "app"}],
        users=[{"name": "app", "password": APP_PASSWORD, "databases": [{"name": "app"}]}],
    )
    view = wait_status(lambda: show(h.a, "instance", created["id"]), "ACTIVE")
    with connect(app_params(view)) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, body text NOT NULL)")
        c.execute(
            "INSERT INTO t SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 20000) g"
        )
    relative = relation_file(view, "t")
    home = h.container.handlers.home_of(created["id"])
    engine = engine_of(h)
    engine.stop_instance(home, {})  # flushes every page to the file
    data_file = home / "data" / relative
    pages = data_file.stat().st_size // 8192
    assert pages > 10
    garbage = random.Random(5).randbytes(8192)
    with open(data_file, "r+b") as f:
        f.seek((pages // 2) * 8192)
        f.write(garbage)
    owner = pwd.getpwuid((home / "data").stat().st_uid).pw_name
    connection = {"port": view["connection"]["port"], "os_user": owner}
    engine.start_instance(home, connection)
    wait_status(lambda: show(h.a, "instance", created["id"]), "ACTIVE")
    backup = take_backup(h.a, created["id"], "logically corrupt")
    done = drill(h.a, backup["id"])
    assert done["drill_status"] == "FAILED", done
    assert "pg_amcheck" in done["drill_error"], done["drill_error"]
    assert APP_PASSWORD not in done["drill_error"]
    homes.assert_gone()
    assert show(h.a, "instance", created["id"])["last_restorable_backup_id"] is None


def test_a_drill_removes_the_server_home_and_os_user_a_dead_drill_left(
    h: Harness, source: dict[str, Any], homes: DrillHomes
) -> None:
    backup = take_backup(h.a, source["id"], "after a crash")
    instances = h.settings.data_dir / "instances"
    # What a drill whose process was killed leaves: a running server in its home, its OS
    # user, and its lock file, which nobody holds any more.
    dead = instances / "drill-00000000000000000000000000000001"
    engine_of(h).create_instance(dead, InstanceRequest("drill"))
    dead.with_name(dead.name + ".lock").write_text(backup["datastore"]["version_id"])
    assert server_processes(dead) != []
    assert InstanceIdentity.lookup(name_for(dead)) is not None
    done = drill(h.a, backup["id"])
    assert done["drill_status"] == "OK", done["drill_error"]
    assert not dead.exists() and not dead.with_name(dead.name + ".lock").exists()
    assert server_processes(dead) == []
    assert InstanceIdentity.lookup(name_for(dead)) is None
    homes.assert_gone()
    assert sorted(instances.glob("drill-*")) == []


def test_drill_cron_drills_a_postgresql_schedules_newest_backup() -> None:
    clock = ManualClock(datetime(2031, 3, 2))  # a Sunday
    with reachable_dir("strongroom-pgdrillcron-") as base:
        root = base / "service"
        root.mkdir(mode=0o711)
        hc = make_clocked_harness(
            root, clock, datastores=["sqlite", "postgresql"], engine_timeout=120
        )
        try:
            created = hc.a.create_instance(
                "scheduled",
                datastore={"type": "postgresql"},
                databases=[{"name": "app"}],
                users=[{"name": "app", "password": APP_PASSWORD, "databases": [{"name": "app"}]}],
            )
            view = wait_status(lambda: show(hc.a, "instance", created["id"]), "ACTIVE")
            with connect(app_params(view)) as c:
                c.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 77) g")
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
            clock.set(datetime(2031, 3, 2, 3))
            assert scheduler_of(hc).tick() == 1
            schedule_id = r.json()["backup_schedule"]["id"]
            shown = show(hc.a, "backup_schedule", schedule_id)
            backup_id = shown["last_backup_id"]
            wait_status(lambda: show(hc.a, "backup", backup_id), "COMPLETED")
            clock.set(datetime(2031, 3, 2, 5))
            assert scheduler_of(hc).drills() == 1
            done = drill_finished(hc.a, backup_id)
            assert done["drill_status"] == "OK", done["drill_error"]
            assert done["drill_report"]["rows"]["app"] == {"public.t": 77}
            shown = show(hc.a, "instance", created["id"])
            assert shown["last_restorable_backup_id"] == backup_id
        finally:
            hc.container.close()


def make_tables(params: dict[str, Any], count: int) -> None:
    with connect(params) as c:
        c.execute(
            "DO $$ BEGIN FOR i IN 1.." + str(count) + " LOOP "
            "EXECUTE format('CREATE TABLE %I (x int)', 't' || lpad(i::text, 4, '0')); "
            "END LOOP; END $$"
        )
        c.execute("INSERT INTO t0001 VALUES (1), (2), (3)")


def test_a_drill_counts_the_first_thousand_tables_across_databases(
    h: Harness, homes: DrillHomes
) -> None:
    created = h.a.create_instance(
        "many tables",
        datastore={"type": "postgresql"},
        databases=[{"name": "app"}, {"name": "zz"}],
        users=[
            {
                "name": "app",
                "password": APP_PASSWORD,
                "databases": [{"name": "app"}, {"name": "zz"}],
            }
        ],
    )
    view = wait_status(lambda: show(h.a, "instance", created["id"]), "ACTIVE")
    make_tables(app_params(view), 600)
    make_tables(tcp(view["connection"], "app", APP_PASSWORD, "zz"), 500)
    backup = take_backup(h.a, created["id"], "many tables")
    done = drill(h.a, backup["id"])
    assert done["drill_status"] == "OK", done["drill_error"]
    report = done["drill_report"]
    assert report["tables"] == 1100
    rows = report["rows"]
    assert sorted(rows) == ["app", "postgres", "zz"]
    assert len(rows["app"]) == 600 and rows["postgres"] == {}
    assert sorted(rows["zz"]) == [f"public.t{n:04d}" for n in range(1, 401)]
    assert rows["app"]["public.t0001"] == 3 and rows["zz"]["public.t0001"] == 3
    homes.assert_gone()


def test_a_backup_lacking_its_segments_first_page_drills_ok(
    h: Harness, homes: DrillHomes, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = h.a.create_instance(
        "old WAL window",
        datastore={"type": "postgresql"},
        databases=[{"name": "app"}],
        users=[{"name": "app", "password": APP_PASSWORD, "databases": [{"name": "app"}]}],
    )
    view = wait_status(lambda: show(h.a, "instance", created["id"]), "ACTIVE")
    params = app_params(view)
    with connect(params) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, body text NOT NULL)")
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, %s) g", (ROWS,))
        c.execute(FILLER_TABLE)
    names = itertools.count(1)
    stored, _ = until_past_first_page(
        params, monkeypatch, lambda: take_backup(h.a, created["id"], f"old {next(names)}")
    )

    # Without the rebuilt segment header, recovery stops at the zeroed first page.
    with monkeypatch.context() as patched:
        patched.setattr(wal_header, "restore_segment_head", lambda *a, **k: False)
        failed = drill(h.a, stored["id"])
    assert failed["drill_status"] == "FAILED", failed
    assert "invalid magic number 0000" in failed["drill_error"], failed["drill_error"]

    done = drill(h.a, stored["id"])
    assert done["drill_status"] == "OK", done["drill_error"]
    assert done["drill_report"]["checks"] == {"pg_amcheck": "ok"}
    rows = done["drill_report"]["rows"]["app"]
    assert rows["public.t"] == ROWS
    # whole batches of the writers, no more than the source holds now
    assert rows["public.filler"] > 0 and rows["public.filler"] % BATCH_ROWS == 0
    assert rows["public.filler"] <= sum(filler_prefixes(params).values()) * BATCH_ROWS
    homes.assert_gone()
