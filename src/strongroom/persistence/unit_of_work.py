"""SqlUnitOfWork: one session and transaction per use-case step."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from strongroom.domain.ports import (
    BackupRepository,
    CopyRepository,
    DatastoreRepository,
    InstanceRepository,
    JobRepository,
    PitrRepository,
    QuotaRepository,
    ScheduleRepository,
    StrategyRepository,
    TokenRepository,
    WorkerRepository,
)
from strongroom.persistence import core_reads, liveness
from strongroom.persistence.backup_repository import SqlBackupRepository
from strongroom.persistence.copy_repository import SqlCopyRepository
from strongroom.persistence.datastore_repository import SqlDatastoreRepository
from strongroom.persistence.instance_repository import (
    SqlInstanceRepository,
    SqlStrategyRepository,
)
from strongroom.persistence.job_repository import SqlJobRepository, SqlWorkerRepository
from strongroom.persistence.pitr_repository import SqlPitrRepository
from strongroom.persistence.quota_repository import SqlQuotaRepository
from strongroom.persistence.schedule_repository import SqlScheduleRepository
from strongroom.persistence.token_repository import SqlTokenRepository

# Connections a process keeps to a metadata database across the network: as many as the
# API runs request threads (Services.request_threads), so none opens one per request.
POOL_SIZE = 8


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # SQLAlchemy emits BEGIN itself (below), so pysqlite must not.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            # WAL lets API readers proceed while a worker writes; NORMAL is durable in WAL.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # A writing unit of work takes the write lock at BEGIN, so check-then-insert
            # rules (one running backup per instance, quotas) cannot interleave.
            immediate = conn.get_execution_options().get("write", False)
            # On the driver's connection: through SQLAlchemy's statement machinery this
            # one word cost as much as the read it opens.
            conn.connection.driver_connection.execute(  # type: ignore[union-attr]
                "BEGIN IMMEDIATE" if immediate else "BEGIN"
            )

        return engine
    if make_url(url).get_dialect().driver == "psycopg":  # also what postgresql:// means
        # Told dead or alive without a round trip per checkout (see liveness); the
        # connection used last is handed out first, so those in use stay fresh.
        engine = create_engine(url, pool_size=POOL_SIZE, pool_use_lifo=True)
        liveness.watch(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE)


class SqlUnitOfWork:
    """``write``: the step writes (on SQLite it takes the write lock at BEGIN).
    ``read_only``: the step only reads, and on PostgreSQL each of its statements runs on its
    own (autocommit, switched in the driver): no BEGIN and ROLLBACK round trips around a
    page of the API's most requested reads, which took as long as the reads. Its statements
    may see different moments (as under READ COMMITTED anyway); it refuses to write (a
    flush, or an ORM insert, update or delete: each would be committed on its own at once)
    and to commit. On SQLite, and on MariaDB (where the switch itself costs round trips), an
    ordinary read. Its session is bound to one connection, which its Core reads use
    directly (:mod:`core_reads`)."""

    def __init__(
        self, factory: sessionmaker[Session], *, write: bool = False, read_only: bool = False
    ) -> None:
        self._factory = factory
        self._write = write
        self._read_only = read_only

    def __enter__(self) -> SqlUnitOfWork:
        self._connection: Connection | None = None
        if self._read_only:
            self.session = self._read_only_session()
        else:
            self.session = self._factory()
        if self._write:
            self.session.connection(execution_options={"write": True})
        self.backups: BackupRepository = SqlBackupRepository(self.session)
        self.copies: CopyRepository = SqlCopyRepository(self.session)
        self.instances: InstanceRepository = SqlInstanceRepository(self.session)
        self.strategies: StrategyRepository = SqlStrategyRepository(self.session)
        self.datastores: DatastoreRepository = SqlDatastoreRepository(self.session)
        self.quotas: QuotaRepository = SqlQuotaRepository(self.session)
        self.tokens: TokenRepository = SqlTokenRepository(self.session)
        self.jobs: JobRepository = SqlJobRepository(self.session)
        self.workers: WorkerRepository = SqlWorkerRepository(self.session)
        self.schedules: ScheduleRepository = SqlScheduleRepository(self.session)
        self.pitr: PitrRepository = SqlPitrRepository(self.session)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Closing rolls back what was not committed and returns the connection; a rollback
        # first would only expire the session's objects, which closing discards anyway.
        try:
            self.session.close()
        finally:
            if self._connection is not None:
                self._connection.close()

    def _read_only_session(self) -> Session:
        """A session on a connection of its own, which its core reads use directly (see
        :mod:`core_reads`); on PostgreSQL that connection is in autocommit."""
        engine = self._factory.kw["bind"]
        connection = engine.connect()
        try:
            if engine.dialect.name == "postgresql":
                connection.execution_options(isolation_level="AUTOCOMMIT")
            session = self._factory(bind=connection)
        except BaseException:
            connection.close()  # __exit__ does not run when __enter__ fails
            raise
        self._connection = connection
        session.info[READ_ONLY] = True
        session.info[core_reads.READ_CONNECTION] = connection
        return session

    def commit(self) -> None:
        if self._read_only:
            raise ReadOnlyUnitOfWorkError("a read-only unit of work cannot commit")
        self.session.commit()


class ReadOnlyUnitOfWorkError(RuntimeError):
    """A step opened to read tried to write or commit: its writes would not be atomic."""


READ_ONLY = "strongroom.read_only"  # in Session.info of a read-only unit of work's session


def unit_of_work_factory(engine: Engine) -> sessionmaker[Session]:
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    event.listen(sessions, "before_flush", _refuse_flush)
    event.listen(sessions, "do_orm_execute", _refuse_orm_write)
    return sessions


def _refuse_flush(session: Session, _context: Any, _instances: Any) -> None:
    # Called only when the session has changes to write: not on the reads' empty flushes.
    if session.info.get(READ_ONLY):
        raise ReadOnlyUnitOfWorkError("a read-only unit of work cannot write")


def _refuse_orm_write(state: ORMExecuteState) -> None:
    if state.session.info.get(READ_ONLY) and (
        state.is_insert or state.is_update or state.is_delete
    ):
        raise ReadOnlyUnitOfWorkError("a read-only unit of work cannot write")
