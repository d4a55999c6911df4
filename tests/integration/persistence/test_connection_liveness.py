"""Pooled connections to a PostgreSQL metadata database: one the server ended is never
handed to a step, and one in steady use costs no round trip to check (``liveness``)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text

from fixtures.metadata import PG_ADMIN, postgresql_database
from strongroom.persistence import liveness
from strongroom.persistence.unit_of_work import SqlUnitOfWork, make_engine, unit_of_work_factory


@pytest.fixture
def engine() -> Iterator[Engine]:
    with postgresql_database() as url:
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def backend_pid(engine: Engine) -> int:
    """The server process of the connection a read-only step is given."""
    with SqlUnitOfWork(unit_of_work_factory(engine), read_only=True) as uow:
        return int(uow.session.execute(text("select pg_backend_pid()")).scalar_one())


def terminate(pid: int) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        assert admin.execute("select pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        deadline = time.monotonic() + 10
        while admin.execute("select 1 from pg_stat_activity where pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the backend did not end"
            time.sleep(0.01)


def last_statement_start(pid: int) -> object:
    """When the backend ``pid`` started the last statement it was sent."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        row = admin.execute(
            "select query_start from pg_stat_activity where pid = %s", (pid,)
        ).fetchone()
    assert row is not None
    return row[0]


def test_a_connection_the_server_ended_is_replaced_before_a_step_gets_it(engine):
    first = backend_pid(engine)
    terminate(first)  # as a restart or shutdown of the server ends it
    second = backend_pid(engine)  # would fail on the dead connection without the check
    assert second != first
    assert backend_pid(engine) == second  # and the new one is kept


def test_a_connection_in_steady_use_is_not_pinged(engine):
    """A step that runs nothing sends nothing: no ``SELECT 1`` at checkout, so the
    backend's last statement is still the step's before."""
    pid = backend_pid(engine)
    before = last_statement_start(pid)
    with SqlUnitOfWork(unit_of_work_factory(engine), read_only=True) as uow:
        connection = uow.session.info["strongroom.read_connection"]
        assert connection.connection.driver_connection.info.backend_pid == pid
    assert last_statement_start(pid) == before


def test_a_connection_idle_for_long_is_pinged(engine, monkeypatch):
    pid = backend_pid(engine)
    monkeypatch.setattr(liveness, "PING_AFTER_IDLE", 0.0)
    pings: list[object] = []
    original = engine.dialect.do_ping
    monkeypatch.setattr(
        engine.dialect, "do_ping", lambda conn: pings.append(conn) or original(conn)
    )
    assert backend_pid(engine) == pid
    assert len(pings) == 1


def test_readable_tells_a_closed_peer_from_a_quiet_one():
    import socket

    ours, theirs = socket.socketpair()
    try:
        assert not liveness.readable(ours.fileno())
        theirs.close()
        assert liveness.readable(ours.fileno())
    finally:
        ours.close()


def test_a_connection_gone_without_a_word_is_replaced_when_idle_for_long(engine, monkeypatch):
    """A server host that restarted sends nothing on the old connection: after a long
    idle, the ping finds it dead."""
    first = backend_pid(engine)
    terminate(first)
    monkeypatch.setattr(liveness, "readable", lambda _fd: False)  # as if nothing came
    monkeypatch.setattr(liveness, "PING_AFTER_IDLE", 0.0)
    assert backend_pid(engine) != first


def test_every_pooled_connection_the_server_ended_is_replaced(engine):
    """As after a restart of the server: all the pool's connections ended at once, and
    none of the steps that take them next fails."""
    held = [engine.connect() for _ in range(3)]
    pids = [c.connection.driver_connection.info.backend_pid for c in held]
    for connection in held:
        connection.close()
    for pid in pids:
        terminate(pid)
    again = [engine.connect() for _ in range(3)]
    try:
        now = [c.execute(text("select pg_backend_pid()")).scalar_one() for c in again]
    finally:
        for connection in again:
            connection.close()
    assert not set(now) & set(pids)


def test_a_connection_after_a_committed_step_is_not_pinged(engine):
    with SqlUnitOfWork(unit_of_work_factory(engine), write=True) as uow:
        pid = uow.session.execute(text("select pg_backend_pid()")).scalar_one()
        uow.session.execute(text("create table written (n int)"))
        uow.commit()
    before = last_statement_start(pid)
    with SqlUnitOfWork(unit_of_work_factory(engine)) as uow:
        assert uow.session.connection().connection.driver_connection.info.backend_pid == pid
    assert last_statement_start(pid) == before
