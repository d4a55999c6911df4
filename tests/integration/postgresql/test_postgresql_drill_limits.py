"""A restore drill ends within its budget whatever the backup holds: the real service
in-process, real managed servers, backups in the local store.

A tenant that is superuser of its server (root enabled) makes tables whose count takes
as long as it likes: partitioned tables whose partition is a file_fdw foreign table
running ``sleep``. With the per-table limit lowered, such a table is skipped with its
reason, the rest counted, and the drill passes well within its budget; with every count
limit above the budget, the drill stops at the budget and fails saying so. A prepared
transaction restored with the data, holding a table's lock, fails pg_amcheck at once
rather than holding it. Whatever the outcome, the drill's server, its home, its OS user
and the programs it ran are gone.
"""

from __future__ import annotations

import pwd
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.service import Caller, Harness, wait_for
from strongroom.engines.base import Engine
from strongroom.engines.postgresql import checks
from support.drill_homes import DrillHomes as SharedDrillHomes
from support.postgresql_service import (
    PG_MAJOR,
    WAIT,
    connect,
    postgresql_service,
    server_processes,
    tcp,
    wait_status,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
    pytest.mark.skipif(
        not Path(f"/usr/share/postgresql/{PG_MAJOR}/extension/file_fdw.control").exists(),
        reason="file_fdw (postgresql-contrib) not installed",
    ),
]

DRILL_TIMEOUT = 30  # seconds; a drill here restores and checks in a few
# Longer than the budget: a count of it never ends in time by itself. Distinctive, so the
# programs a drill started can be looked for.
SLEEP = "sleep 97"
ROWS = 5


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with postgresql_service(
        "strongroom-pgdrilllimits-",
        datastores=["sqlite", "postgresql"],
        drill_timeout=DRILL_TIMEOUT,
    ) as harness:
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


def root_instance(h: Harness, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A managed server with database ``app``, and its superuser's parameters there."""
    created = h.a.create_instance(
        name, datastore={"type": "postgresql"}, databases=[{"name": "app"}]
    )
    view = wait_status(lambda: show(h.a, "instance", created["id"]), "ACTIVE")
    r = h.a.post(f"/instances/{created['id']}/root")
    assert r.status_code == 200, r.text
    return view, tcp(view["connection"], "root", r.json()["user"]["password"], "app")


def take_backup(caller: Caller, instance_id: str, name: str) -> dict[str, Any]:
    created = caller.create_backup(instance_id, name)
    view: dict[str, Any] = wait_status(lambda: show(caller, "backup", created["id"]), "COMPLETED")
    return view


@pytest.fixture(scope="module")
def slow_backup(h: Harness) -> dict[str, Any]:
    """A backup whose ``app`` holds ``t`` (ROWS rows) and two partitioned tables whose
    only partition runs ``sleep`` before giving its one row."""
    view, root = root_instance(h, "slow counts")
    with connect(root) as c:
        c.execute("CREATE EXTENSION file_fdw")
        c.execute("CREATE SERVER programs FOREIGN DATA WRAPPER file_fdw")
        c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, %s) g", (ROWS,))
        for name in ("slow_a", "slow_b"):
            c.execute(f"CREATE TABLE {name} (x int) PARTITION BY LIST (x)")
            c.execute(
                f"CREATE FOREIGN TABLE {name}_1 PARTITION OF {name} FOR VALUES IN (1) "
                f"SERVER programs OPTIONS (program '{SLEEP}; echo 1')"
            )
    return take_backup(h.a, view["id"], "slow counts")


def programs_running(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmd:
                found.append(cmd)
    return found


class DrillHomes(SharedDrillHomes):
    """What every drill suite checks, and that no program the slow tables ran is left."""

    def assert_gone(self) -> None:
        super().assert_gone()
        assert programs_running(SLEEP) == []


@pytest.fixture
def homes(h: Harness, monkeypatch: pytest.MonkeyPatch) -> DrillHomes:
    return DrillHomes(engine_of(h), monkeypatch, server_processes)


def drill(caller: Caller, backup_id: str) -> tuple[dict[str, Any], float]:
    """The backup once its drill finished, and how long the drill took."""
    started = time.monotonic()
    r = caller.post(f"/backups/{backup_id}/drill")
    assert r.status_code == 202, r.text

    def finished() -> dict[str, Any] | None:
        b: dict[str, Any] = show(caller, "backup", backup_id)
        return b if b["drill_status"] != "RUNNING" else None

    done: dict[str, Any] = wait_for(finished, timeout=WAIT)
    return done, time.monotonic() - started


def test_a_table_whose_count_is_slow_is_skipped_and_the_drill_passes_in_its_budget(
    h: Harness, slow_backup: dict[str, Any], homes: DrillHomes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checks, "COUNT_STATEMENT_TIMEOUT_S", 1.0, raising=False)
    done, took = drill(h.a, slow_backup["id"])
    assert done["drill_status"] == "OK", done["drill_error"]
    report = done["drill_report"]
    assert report["checks"] == {"pg_amcheck": "ok"}
    assert report["tables"] == 3
    assert report["rows"] == {"app": {"public.t": ROWS}, "postgres": {}}
    assert report["skipped"] == 2
    reason = "not counted: its count took over 1 s"
    assert report["skipped_tables"] == {"app": {"public.slow_a": reason, "public.slow_b": reason}}
    assert took < DRILL_TIMEOUT, took
    homes.assert_gone()


def test_a_drill_stops_at_its_budget_and_fails_saying_so(
    h: Harness, slow_backup: dict[str, Any], homes: DrillHomes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every count limit above the budget: only the budget ends the count.
    monkeypatch.setattr(checks, "COUNT_STATEMENT_TIMEOUT_S", 600.0, raising=False)
    monkeypatch.setattr(checks, "COUNT_BUDGET_S", 3600.0, raising=False)
    before = sorted(i["id"] for i in h.a.get("/instances").json()["instances"])
    done, took = drill(h.a, slow_backup["id"])
    assert done["drill_status"] == "FAILED", done
    error = done["drill_error"]
    assert f"did not finish within {DRILL_TIMEOUT} s" in error, error
    assert "Traceback" not in error
    assert done["drill_report"] is None
    # The budget, and the scratch server's removal (a fast stop ends the count at once).
    assert took < DRILL_TIMEOUT + 20, took
    homes.assert_gone()
    assert sorted(i["id"] for i in h.a.get("/instances").json()["instances"]) == before


def test_a_prepared_transactions_lock_fails_pg_amcheck_at_once(
    h: Harness, homes: DrillHomes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checks, "LOCK_TIMEOUT_MS", 1000, raising=False)
    view, root = root_instance(h, "prepared")
    with connect(root) as c:
        c.execute("CREATE TABLE held (id int PRIMARY KEY)")
        c.execute("INSERT INTO held SELECT generate_series(1, 10)")
        c.execute("ALTER SYSTEM SET max_prepared_transactions = 4")
    # max_prepared_transactions takes a restart; a restore keeps the source's value.
    home = h.container.handlers.home_of(view["id"])
    engine = engine_of(h)
    engine.stop_instance(home, {})
    owner = pwd.getpwuid((home / "data").stat().st_uid).pw_name
    engine.start_instance(home, {"port": view["connection"]["port"], "os_user": owner})
    wait_status(lambda: show(h.a, "instance", view["id"]), "ACTIVE")
    with connect(root) as c:
        c.execute("BEGIN")
        c.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        c.execute("PREPARE TRANSACTION 'kept'")
    backup = take_backup(h.a, view["id"], "prepared")
    done, took = drill(h.a, backup["id"])
    assert done["drill_status"] == "FAILED", done
    error = done["drill_error"]
    assert "pg_amcheck" in error and "lock timeout" in error, error
    assert took < DRILL_TIMEOUT, took
    homes.assert_gone()
