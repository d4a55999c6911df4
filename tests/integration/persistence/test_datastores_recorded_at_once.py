"""Two hosts starting at the same moment on a new metadata database both record the
datastores they detect: the second insert waits for the first, finds the key taken and
keeps the row the first wrote, instead of failing the start-up with a duplicate key."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from fixtures.service import wait_for
from strongroom.config import Settings
from strongroom.domain.model import Datastore, DatastoreVersion
from strongroom.metadata_setup import metadata_sessions
from strongroom.persistence.datastore_repository import SqlDatastoreRepository

pytestmark = pytest.mark.integration

DETECTED = Datastore(
    id="ds-postgresql",
    name="postgresql",
    default_version_id="v-15",
    versions=(DatastoreVersion("v-15", "ds-postgresql", "postgresql", "15", True),),
)
# The server is shared with other tests running meanwhile: only the second host's own
# session waiting counts (its id from SESSION_ID, in the transaction it then inserts in).
SESSION_ID = {"postgresql": "select pg_backend_pid()", "mysql": "select connection_id()"}
WAITING = {
    "postgresql": "select count(*) from pg_locks where not granted and pid = :session",
    "mysql": "select count(*) from information_schema.innodb_trx "
    "where trx_state = 'LOCK WAIT' and trx_mysql_thread_id = :session",
}


def test_a_second_host_recording_the_same_datastore_at_once_keeps_the_firsts_row(
    metadata_url: str | None, tmp_path: Path
) -> None:
    if metadata_url is None:
        pytest.skip("SQLite has one writer at a time: the second cannot insert concurrently")
    sessions = metadata_sessions(
        Settings(data_dir=tmp_path, database_url=metadata_url), migrate_now=True
    )
    first, second, watcher = sessions(), sessions(), sessions()
    failures: list[BaseException] = []
    dialect = first.get_bind().dialect.name
    second_id = second.execute(text(SESSION_ID[dialect])).scalar()

    def start_second_host() -> None:
        try:
            SqlDatastoreRepository(second).ensure(DETECTED)
            second.commit()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=start_second_host, daemon=True)
    try:
        SqlDatastoreRepository(first).ensure(DETECTED)
        first.flush()  # the rows are in, not yet committed: the second insert must wait
        thread.start()
        waiting = text(WAITING[dialect]).bindparams(session=second_id)
        # Polled no faster than every 0.1 s: InnoDB refreshes innodb_trx only for a reader
        # that has not read it within the last 0.1 s.
        wait_for(
            lambda: failures or watcher.execute(waiting).scalar() or watcher.rollback(),
            timeout=60,
            interval=0.25,
        )
        assert not failures, failures
        first.commit()
        thread.join(timeout=60)
        assert not thread.is_alive() and failures == []
    finally:
        first.rollback()  # a failure above must not leave the second insert waiting
        thread.join(timeout=60)
        for session in (first, second, watcher):
            session.close()
    with sessions() as check:
        repo = SqlDatastoreRepository(check)
        assert [(d.id, d.default_version_id) for d in repo.all()] == [("ds-postgresql", "v-15")]
