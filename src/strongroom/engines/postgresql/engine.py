"""``PostgresEngine``: the engine boundary for PostgreSQL. It runs managed servers
(:mod:`server`, :mod:`accounts`), registers external ones (:mod:`external`), and picks a
backup method per server: the files where this host reads the data directory
(:mod:`file_method`), the replication protocol elsewhere (:mod:`replication_method`);
:mod:`restore` finishes what either method laid out (see the package docstring)."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from strongroom.engines import beneath, process
from strongroom.engines.allowlist import AllowList
from strongroom.engines.base import (
    ArchivedWal,
    BackupResult,
    ByteSink,
    Connection,
    EngineInfo,
    InstanceRequest,
    Metadata,
    ParentChain,
    RestoreInput,
)
from strongroom.engines.deadline import read_by
from strongroom.engines.errors import (
    BackupError,
    EngineError,
    EngineUnavailableError,
    InstanceError,
    RestoreError,
)
from strongroom.engines.identity import InstanceIdentity
from strongroom.engines.postgresql import (
    accounts,
    archiver,
    checks,
    cluster,
    datadir,
    external,
    methods,
    models,
    names,
    restore,
    session,
)
from strongroom.engines.postgresql.file_method import FileMethod
from strongroom.engines.postgresql.replication_method import ReplicationMethod
from strongroom.engines.postgresql.server import INCLUDE_LINES, ManagedServer, write_beneath
from strongroom.engines.postgresql.streamio import StreamFormatError
from strongroom.engines.postgresql.walstream import WalStreamError

DATASTORE = "postgresql"
_T = TypeVar("_T")


class PostgresEngine:
    """PostgreSQL engine. See :mod:`strongroom.engines.postgresql` for the design."""

    datastore = DATASTORE

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        bind_address: str = "127.0.0.1",
        allowed_hosts: AllowList | Sequence[str] = (),
        allowed_data_dirs: AllowList | Sequence[Path] = (),
        timeout: float = 3600,
        page_deltas: bool = False,
    ) -> None:
        self.page_deltas = page_deltas
        self._explicit_bin_dir = Path(bin_dir) if bin_dir is not None else None
        self.bind_address = bind_address
        self.allowed_hosts = (
            allowed_hosts if isinstance(allowed_hosts, AllowList) else AllowList.of(allowed_hosts)
        )
        self.allowed_data_dirs = (
            allowed_data_dirs
            if isinstance(allowed_data_dirs, AllowList)
            else AllowList.of_paths(allowed_data_dirs)
        )
        self.timeout = float(timeout)
        self._bin_dir: Path | None = None
        self._version: tuple[str, str] | None = None

    # -- installation --------------------------------------------------------------------

    def detect(self) -> EngineInfo | None:
        bin_dir = cluster.find_bin_dir(self._explicit_bin_dir)
        if bin_dir is None:
            return None
        try:
            major, full = cluster.server_version(bin_dir)
        except EngineError:
            return None
        self._bin_dir, self._version = bin_dir, (major, full)
        return EngineInfo(DATASTORE, major, extra={"server_version": full, "bin_dir": str(bin_dir)})

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None and self.detect() is None:
            raise EngineUnavailableError("PostgreSQL server tools are not installed")
        assert self._bin_dir is not None
        return self._bin_dir

    @property
    def major(self) -> str:
        if self._version is None and self.detect() is None:
            raise EngineUnavailableError("PostgreSQL server tools are not installed")
        assert self._version is not None
        return self._version[0]

    def _tool(self, name: str) -> Path:
        return self.bin_dir / name

    def _server(self, home: Path, identity: InstanceIdentity | None = None) -> ManagedServer:
        """The server in ``home``, run as ``identity`` (default: the owner of its data
        directory, see :meth:`ManagedServer.identity_of`)."""
        return ManagedServer(
            Path(home),
            identity if identity is not None else ManagedServer.identity_of(home),
            bin_dir=self.bin_dir,
            bind_address=self.bind_address,
            timeout=self.timeout,
        )

    @property
    def _files(self) -> FileMethod:
        return FileMethod(timeout=self.timeout, page_deltas=self.page_deltas)

    @property
    def _replication(self) -> ReplicationMethod:
        return ReplicationMethod(tool=self._tool, timeout=self.timeout)

    # -- managed instances ---------------------------------------------------------------

    def check_request(self, request: InstanceRequest) -> None:
        names.check_request(request)

    def create_instance(self, home: Path, request: InstanceRequest) -> Connection:
        home = Path(home)
        names.check_request(request)
        password = secrets.token_urlsafe(24)
        server = self._server(home, ManagedServer.new_identity(home))
        with _removed_on_failure(server, password, InstanceError, "could not create the instance"):
            server.prepare_home()
            pwfile = home / ".initdb-password"
            with beneath.directory(home) as home_fd:
                write_beneath(
                    home_fd, pwfile.name, (password + "\n").encode(), server.identity.owner
                )
            try:
                process.run(
                    server.identity.argv(
                        [
                            self._tool("initdb"),
                            "-D",
                            server.data,
                            "-U",
                            "postgres",
                            f"--pwfile={pwfile}",
                            "--auth-local=scram-sha-256",
                            "--auth-host=scram-sha-256",
                            "-E",
                            "UTF8",
                            "--locale=C",
                            "--no-instructions",
                        ]
                    ),
                    timeout=self.timeout,
                )
            finally:
                pwfile.unlink(missing_ok=True)
            conf = server.read_file("data/postgresql.conf", 1 << 20).decode()
            server.write_file("postgresql.conf", conf + INCLUDE_LINES)
            server.write_base_conf({})
            port = server.start(None)
            connection: Connection = {
                "host": self.bind_address,
                "port": port,
                "socket_dir": str(server.run),
                "superuser": "postgres",
                "password": password,
                "database": "postgres",
                "data_dir": str(server.data),
                "managed": True,
                "os_user": server.identity.name,
                "slot": session.SLOT_PREFIX + secrets.token_hex(4),
                "users": [],
                "databases": [],
            }
            accounts.apply_request(connection, request)
            return connection

    def start_instance(self, home: Path, connection: Connection) -> Connection:
        home = Path(home)
        server = self._server(home)
        if not (server.data / "PG_VERSION").exists():
            raise InstanceError("the instance's data directory is missing")
        updated = dict(connection)
        if os.geteuid() == 0 and not connection.get("os_user"):
            server = self._adopt(server)
            updated["os_user"] = server.identity.name
        # Servers made before local connections needed a password had ``trust`` there.
        server.write_hba()
        if server.running():
            server.reload()
            return updated
        with contextlib.suppress(OSError):  # stale: pg_ctl status said not running
            server.remove_file("data/postmaster.pid")
        updated["port"] = server.start(int(connection["port"]))
        # Started with this release's socket directory (an older one used /tmp for some).
        updated["socket_dir"] = str(server.run)
        return updated

    def _adopt(self, old: ManagedServer) -> ManagedServer:
        """An instance created when every managed server ran as ``postgres``: stopped,
        given an OS user of its own, started again by the caller."""
        old.stop()
        server = self._server(old.home, ManagedServer.new_identity(old.home))
        server.adopt(old.identity)
        return server

    def stop_instance(self, home: Path, connection: Connection) -> None:
        self._server(Path(home)).stop()

    def destroy_instance(self, home: Path, connection: Connection) -> None:
        if not connection.get("managed", True):
            external.forget(connection)
            return
        self._server(Path(home)).destroy()

    def check_restored(
        self, home: Path, connection: Connection, *, timeout: float | None = None
    ) -> dict[str, Any]:
        limit = self.timeout if timeout is None else min(timeout, self.timeout)
        return checks.check_restored(self.bin_dir, connection, timeout=limit)

    # -- external instances --------------------------------------------------------------
    def register_external(self, params: Mapping[str, Any], *, project_id: str) -> Connection:
        return external.register(
            params,
            project_id=project_id,
            allowed_hosts=self.allowed_hosts,
            allowed_data_dirs=self.allowed_data_dirs,
            major=self.major,
        )

    def external_identity(self, connection: Connection) -> str:
        return external.identity(connection)

    # -- both ----------------------------------------------------------------------------

    def public_view(self, connection: Connection) -> dict[str, Any]:
        typed = models.CONNECTION.validate_python(connection)
        if isinstance(typed, models.ManagedConnection):
            return typed.model_dump(include={"managed", "host", "port", "databases", "users"})
        return typed.model_dump(
            include={"managed", "host", "port", "database", "user", "data_dir"},
            exclude_none=True,
        )

    def data_size(self, connection: Connection) -> int | None:
        try:
            with session.connect(connection) as conn:
                row = conn.execute(
                    "SELECT sum(pg_database_size(oid))::bigint FROM pg_database "
                    "WHERE datallowconn AND has_database_privilege(oid, 'CONNECT')"
                ).fetchone()
        except psycopg.Error:
            return None
        return int(row[0]) if row and row[0] is not None else None

    # -- WAL archiving (point-in-time restore) --------------------------------------------
    def start_archiving(self, connection: Connection) -> int:
        return _archive_call(archiver.start_archiving, connection)

    def archive_batch(self, connection: Connection, sink: ByteSink, *, start: int) -> ArchivedWal:
        return _archive_call(
            lambda c: archiver.archive_batch(c, sink, start=start, timeout=self.timeout).archived(),
            connection,
        )

    def stop_archiving(self, connection: Connection) -> None:
        _archive_call(archiver.stop_archiving, connection)

    # -- backup and restore --------------------------------------------------------------
    def backup(
        self,
        connection: Connection,
        sink: ByteSink,
        *,
        parent: Metadata | None,
        parent_chain: ParentChain | None = None,
    ) -> BackupResult:
        password = connection.get("password")
        try:
            if FileMethod.applies(connection):
                return self._files.backup(connection, sink, parent, parent_chain)
            return self._replication.backup(connection, sink, parent)
        except datadir.DataDirError as exc:
            raise BackupError(str(exc)) from exc
        except OSError as exc:
            raise BackupError(f"reading the data directory failed: {exc}") from exc
        except BackupError as exc:
            raise BackupError(session.scrub(str(exc), password)) from exc
        except psycopg.Error as exc:
            raise BackupError(
                f"PostgreSQL backup failed: {session.scrub(session.pg_error(exc), password)}"
            ) from exc

    def check_restorable(self, metadata: Metadata) -> None:
        methods.check_restorable(metadata, self.major)

    def restore_instance(
        self,
        home: Path,
        chain: Sequence[RestoreInput],
        request: InstanceRequest,
        *,
        archive: Sequence[RestoreInput] = (),
        target_time: datetime | None = None,
        timeout: float | None = None,
    ) -> Connection:
        """``archive``: archived WAL batches after the chain, replayed to ``target_time``
        (naive UTC; ``None``: to their end). ``timeout``: seconds the whole restore may
        take (and each wait the engine's own)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        chain = read_by(chain, deadline, RestoreError)
        archive = read_by(archive, deadline, RestoreError)
        home = Path(home)
        names.check_request(request)
        links = methods.check_chain(chain, self.major)
        files = links[0].meta.method == methods.FILES_FULL
        lay_out = self._files.lay_out if files else self._replication.lay_out
        password = secrets.token_urlsafe(24)
        server = self._server(home, ManagedServer.new_identity(home))
        with _removed_on_failure(
            server, password, RestoreError, "restore failed", StreamFormatError, WalStreamError
        ):
            return restore.restore(
                server,
                links,
                request,
                password,
                lay_out,
                archive=archive,
                target_time=target_time,
                deadline=deadline,
            )


@contextlib.contextmanager
def _removed_on_failure(
    server: ManagedServer,
    password: str,
    error: type[EngineError],
    what: str,
    *reasons: type[Exception],
) -> Iterator[None]:
    """Remove the half-made server in ``server``'s home if the block fails; an engine, a
    stream (``reasons``), an OS or a libpq failure becomes ``error``, never showing
    ``password``."""
    shown: tuple[type[Exception], ...] = (EngineError, *reasons)
    try:
        yield
    except shown as exc:
        server.destroy(quietly=True)
        raise error(session.scrub(str(exc), password)) from exc
    except (OSError, psycopg.Error) as exc:
        server.destroy(quietly=True)
        raise error(f"{what}: {session.scrub(session.pg_error(exc), password)}") from exc
    except BaseException:
        server.destroy(quietly=True)
        raise


def _archive_call(call: Callable[[Connection], _T], connection: Connection) -> _T:
    """``call`` with the password scrubbed from any failure it reports."""
    password = connection.get("password")
    try:
        return call(connection)
    except BackupError as exc:
        raise BackupError(session.scrub(str(exc), password)) from exc
    except psycopg.Error as exc:
        raise BackupError(
            f"WAL archiving failed: {session.scrub(session.pg_error(exc), password)}"
        ) from exc
