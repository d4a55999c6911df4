"""The same service on each metadata database: SQLite (embedded), PostgreSQL and MariaDB,
through the same models and Alembic migrations."""

from __future__ import annotations

from datetime import datetime

from fixtures.service import make_harness


def test_backup_lifecycle_on_each_metadata_database(tmp_path, metadata_url):
    overrides = {"database_url": metadata_url} if metadata_url else {}
    h = make_harness(tmp_path, **overrides)
    try:
        inst = h.a.create_instance("meta")
        h.a.wait_instance(inst["id"])
        full = h.a.wait_backup(h.a.create_backup(inst["id"], "full")["id"])
        incr = h.a.wait_backup(h.a.create_backup(inst["id"], "incr", incremental=1)["id"])
        assert incr["parent_id"] == full["id"]
        listed = h.a.get("/backups?limit=1").json()
        assert [b["id"] for b in listed["backups"]] == [incr["id"]]
        assert "links" in listed
        assert h.b.get(f"/backups/{full['id']}").status_code == 404
        h.a.post("/backup_strategies", {"backup_strategy": {"swift_container": "c1"}})
        assert (
            h.a.get("/backup_strategies").json()["backup_strategies"][0]["swift_container"] == "c1"
        )
        r = h.a.post(
            "/instances", {"instance": {"name": "r", "restorePoint": {"backupRef": incr["id"]}}}
        )
        assert r.status_code == 200, r.text
        h.a.wait_instance(r.json()["instance"]["id"])
        assert h.a.delete(f"/backups/{full['id']}").status_code == 202
        h.wait_idle()
        assert h.a.get("/backups").json() == {"backups": []}
    finally:
        h.container.close()


FIVE_GIB = 5 * 1024**3


def test_sizes_over_4_gib_survive_a_round_trip_on_each_metadata_database(tmp_path, metadata_url):
    """Byte counts are 64-bit everywhere; a database already at the previous revision, with
    a backup in it, is migrated in place and keeps its row."""
    from alembic import command
    from sqlalchemy import text

    from strongroom.domain.model import Backup, BackupId, BackupState, ProjectId
    from strongroom.persistence import migrate
    from strongroom.persistence.unit_of_work import (
        SqlUnitOfWork,
        make_engine,
        unit_of_work_factory,
    )

    engine = make_engine(metadata_url or f"sqlite:///{tmp_path / 'meta.db'}")
    config = migrate.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")
    with engine.begin() as connection:
        connection.execute(
            text(
                "insert into backups (id, project_id, name, state, created, updated,"
                " progress_done, stored_bytes) values ('old', 'p', 'old', 'COMPLETED',"
                " :t, :t, 7, 11)"
            ),
            {"t": datetime(2026, 1, 1)},
        )
    migrate.upgrade(engine)
    uow = unit_of_work_factory(engine)
    t = datetime(2026, 1, 1, 12)
    big = Backup(BackupId("big"), ProjectId("p"), "big", None, None, None, BackupState.SAVING, t, t)
    big.progress.bytes_done = FIVE_GIB - 1
    big.progress.bytes_expected = FIVE_GIB
    big.stored_bytes = FIVE_GIB + 1
    big.size_gb = 5.0
    with SqlUnitOfWork(uow, write=True) as u:
        u.backups.add(big)
        u.commit()
    with SqlUnitOfWork(uow, write=True) as u:
        u.backups.update_progress("big", FIVE_GIB, t)
        u.commit()
    with SqlUnitOfWork(uow) as u:
        found = u.backups.find("big")
        old = u.backups.find("old")
    engine.dispose()
    assert found is not None and old is not None
    assert found.progress.bytes_done == FIVE_GIB
    assert found.progress.bytes_expected == FIVE_GIB
    assert found.stored_bytes == FIVE_GIB + 1
    assert found.size_gb == 5.0
    assert (old.progress.bytes_done, old.stored_bytes) == (7, 11)


def test_two_projects_racing_to_register_one_database_on_each_metadata_database(
    tmp_path, metadata_url
):
    """Both requests at once, bounded rounds: exactly one project gets the database."""
    import sqlite3
    import threading
    import time

    overrides = {"database_url": metadata_url} if metadata_url else {}
    h = make_harness(tmp_path, **overrides)
    try:
        deadline = time.monotonic() + 60
        for round_ in range(15):
            assert time.monotonic() < deadline, "the race rounds took too long"
            path = tmp_path / "external" / f"db{round_}.db"
            with sqlite3.connect(path) as db:
                db.execute("create table t(x)")
            barrier = threading.Barrier(2, timeout=10)
            statuses: dict[str, int] = {}

            def register(name: str, caller, path=path, barrier=barrier, statuses=statuses):
                body = {
                    "instance": {
                        "name": "ext",
                        "datastore": {"type": "sqlite"},
                        "external": {"path": str(path)},
                    }
                }
                barrier.wait()
                statuses[name] = caller.post("/instances", body).status_code

            threads = [
                threading.Thread(target=register, args=(n, c)) for n, c in (("a", h.a), ("b", h.b))
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            assert sorted(statuses.values()) == [200, 403], (round_, statuses)
    finally:
        h.container.close()


def test_a_read_only_unit_of_work_leaves_no_transaction_open(tmp_path, metadata_url):
    """On PostgreSQL, the API's read-only steps run each statement on its own: the
    connection is not left "idle in transaction" between them (no BEGIN, no ROLLBACK). On
    every database such a step cannot commit nor write (each write would be committed at
    once). An ordinary step, on the same pool, is in a transaction."""
    import pytest
    from sqlalchemy import text

    from strongroom.persistence.unit_of_work import ReadOnlyUnitOfWorkError, SqlUnitOfWork

    engine, sessions = _migrated(tmp_path, metadata_url)
    try:
        with (
            SqlUnitOfWork(sessions, read_only=True) as uow,
            pytest.raises(ReadOnlyUnitOfWorkError),
        ):
            uow.commit()
        with SqlUnitOfWork(sessions, write=True) as uow:
            uow.backups.add(_a_backup("kept"))
            uow.commit()
        with SqlUnitOfWork(sessions, read_only=True) as uow:
            uow.backups.add(_a_backup("added"))
            with pytest.raises(ReadOnlyUnitOfWorkError, match="cannot write"):
                uow.session.flush()
        with (
            SqlUnitOfWork(sessions, read_only=True) as uow,
            pytest.raises(ReadOnlyUnitOfWorkError, match="cannot write"),
        ):
            uow.backups.remove("kept")  # an ORM delete statement, no flush
        with SqlUnitOfWork(sessions) as uow:  # nothing was written, nothing removed
            assert uow.backups.find("kept") is not None
            assert uow.backups.find("added") is None
        if engine.dialect.name != "postgresql":
            return  # an ordinary read there (SQLite: no server; MariaDB: the switch costs more)
        for read_only, expected in ((True, False), (False, True)):
            with SqlUnitOfWork(sessions, read_only=read_only) as uow:
                uow.session.execute(text("select 1"))
                assert _in_transaction(engine, uow) is expected
        # The pool's connection goes back as it came: the next step is in a transaction.
        with SqlUnitOfWork(sessions) as uow:
            uow.session.execute(text("select 1"))
            assert _in_transaction(engine, uow)
    finally:
        engine.dispose()


def _migrated(tmp_path, metadata_url):
    """The metadata database at the latest revision: its engine and session factory."""
    from strongroom.persistence import migrate
    from strongroom.persistence.unit_of_work import make_engine, unit_of_work_factory

    engine = make_engine(metadata_url or f"sqlite:///{tmp_path / 'meta.db'}")
    migrate.upgrade(engine)
    return engine, unit_of_work_factory(engine)


def _a_backup(backup_id: str):
    from strongroom.domain.model import Backup, BackupId, BackupState, ProjectId

    moment = datetime(2026, 1, 1)
    return Backup(
        id=BackupId(backup_id),
        project_id=ProjectId("p"),
        name=backup_id,
        description=None,
        instance_id=None,
        parent_id=None,
        state=BackupState.COMPLETED,
        created=moment,
        updated=moment,
    )


def _in_transaction(engine, uow) -> bool:
    """Whether the unit of work's connection is in a transaction, asked of the server by
    another connection."""
    from sqlalchemy import text

    pid = uow.session.execute(text("select pg_backend_pid()")).scalar_one()
    ask = "select state from pg_stat_activity where pid = :pid"
    with engine.connect() as other:
        state = other.execute(text(ask), {"pid": pid}).scalar_one()
    return state == "idle in transaction"


def test_pages_and_views_carry_their_copies_on_each_metadata_database(tmp_path, metadata_url):
    """A page of backups and a backup's view read their copies in the same statement: a
    page counts backups, not copies; copies come oldest first, those being deleted left
    out; a read-only step gives its connection back each time."""
    from dataclasses import replace
    from datetime import timedelta

    from strongroom.domain.model import BackupCopy, CopyState
    from strongroom.domain.ports import BackupQuery
    from strongroom.persistence.unit_of_work import POOL_SIZE, SqlUnitOfWork

    engine, sessions = _migrated(tmp_path, metadata_url)
    t0 = datetime(2026, 1, 1)

    def copy(copy_id: str, backup_id: str, store: str, minutes: int, state: CopyState):
        moment = t0 + timedelta(minutes=minutes)
        return BackupCopy(copy_id, backup_id, "p", store, "c", state, moment, moment)  # type: ignore[arg-type]

    try:
        with SqlUnitOfWork(sessions, write=True) as uow:
            for minutes, backup_id in enumerate("abcde"):
                backup = _a_backup(backup_id)
                backup.created = backup.updated = t0 + timedelta(minutes=minutes)
                uow.backups.add(backup)
            uow.copies.add(copy("b-later", "b", "east", 9, CopyState.COMPLETED))
            uow.copies.add(copy("b-gone", "b", "north", 1, CopyState.DELETING))
            uow.copies.add(copy("b-first", "b", "west", 2, CopyState.COPYING))
            uow.copies.add(copy("b-same", "b", "south", 2, CopyState.COMPLETED))
            uow.copies.add(copy("d-only", "d", "east", 5, CopyState.FAILED))
            uow.commit()

        def page(offset: int, with_copies: bool = True) -> list[tuple[str, list[str]]]:
            query = BackupQuery(project_id="p", offset=offset, limit=2, with_copies=with_copies)
            with SqlUnitOfWork(sessions, read_only=True) as uow:
                return [(b.id, [c.id for c in b.copies]) for b in uow.backups.query(query)]

        b_copies = ["b-same", "b-first", "b-later"]  # by time, then store; not the deleted
        assert page(0) == [("e", []), ("d", ["d-only"])]
        assert page(2) == [("c", []), ("b", b_copies)]
        assert page(4) == [("a", [])]
        assert page(2, with_copies=False) == [("c", []), ("b", [])]
        with SqlUnitOfWork(sessions, read_only=True) as uow:
            b = uow.backups.find_with_copies("b")
            assert b is not None and [c.id for c in b.copies] == b_copies
            assert replace(b, copies=[]) == uow.backups.find("b")  # the same, copies aside
            assert b.copies[0].state is CopyState.COMPLETED
            assert b.copies[0].created == t0 + timedelta(minutes=2)
            a = uow.backups.find_with_copies("a")
            assert a is not None and a.copies == []
            assert uow.backups.find_with_copies("missing") is None
        for _ in range(POOL_SIZE * 3):
            assert page(4) == [("a", [])]
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        engine.dispose()
