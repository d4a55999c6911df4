"""``PostgresEngine``: managed and external PostgreSQL servers; file-level backups with
page incrementals where the data directory is readable here, ``pg_basebackup`` and
retained WAL elsewhere (see the package docstring)."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq, sql

from strongroom.engines import beneath, process
from strongroom.engines.allowlist import AllowList
from strongroom.engines.base import (
    BackupResult,
    ByteSink,
    Connection,
    EngineInfo,
    InstanceRequest,
    Metadata,
    RestoreInput,
)
from strongroom.engines.errors import (
    BackupError,
    EngineError,
    EngineUnavailableError,
    ExternalNotAllowedError,
    IncompatibleBackupError,
    InstanceError,
    InvalidExternalError,
    InvalidRequestError,
    RestoreError,
)
from strongroom.engines.identity import InstanceIdentity
from strongroom.engines.postgresql import (
    cluster,
    datadir,
    filestream,
    names,
    tarstream,
    walstream,
)
from strongroom.engines.postgresql.lsn import (
    XLOG_BLCKSZ,
    format_lsn,
    is_segment_name,
    parse_lsn,
    record_boundary,
    segment_number,
)
from strongroom.engines.postgresql.server import INCLUDE_LINES, ManagedServer, write_beneath
from strongroom.engines.postgresql.streamio import StreamFormatError

DATASTORE = "postgresql"
FULL_METHOD = "pg_basebackup-tar"
INCREMENTAL_METHOD = "wal-range"
FILES_FULL_METHOD = "pgdata-files"
FILES_INCREMENTAL_METHOD = "pgdata-pages"
FILE_METHODS = (FILES_FULL_METHOD, FILES_INCREMENTAL_METHOD)
FULL_METHODS = (FULL_METHOD, FILES_FULL_METHOD)
SLOT_PREFIX = "strongroom_"
CONNECT_TIMEOUT = 10
SLOT_BUSY_WAIT = 15.0
# Threads laying out a link's files at once (see filestream.ChainRestorer.apply).
LAYOUT_THREADS = min(4, os.cpu_count() or 1)
# What a requested user may not do, whatever defaults a server was built with.
CREATED_ROLE_OPTIONS = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
PROMOTION_POLL = 0.02  # seconds between checks; recovery of a restore ends in tens of ms

_START_RE = re.compile(
    r"write-ahead log start point: ([0-9A-Fa-f]+/[0-9A-Fa-f]+) on timeline (\d+)"
)
_END_RE = re.compile(r"write-ahead log end point: ([0-9A-Fa-f]+/[0-9A-Fa-f]+)")
_CONTROLDATA_SETTINGS = {
    "max_connections setting": "max_connections",
    "max_worker_processes setting": "max_worker_processes",
    "max_wal_senders setting": "max_wal_senders",
    "max_prepared_xacts setting": "max_prepared_transactions",
    "max_locks_per_xact setting": "max_locks_per_transaction",
}
_SETTING_FLOORS = {
    "max_connections": 100,
    "max_worker_processes": 8,
    "max_wal_senders": 10,
    "max_prepared_transactions": 0,
    "max_locks_per_transaction": 64,
}


def _scrub(text: str, *secrets_: str | None) -> str:
    for secret in secrets_:
        if secret:
            text = text.replace(secret, "***")
    return text


def _pg_error(exc: BaseException) -> str:
    """A one-line reason from a psycopg error (its text never includes the password)."""
    text = str(exc).strip()
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return " ".join((primary or text or type(exc).__name__).split())


class _CountingSink:
    def __init__(self, sink: ByteSink) -> None:
        self._sink = sink
        self.count = 0
        self.started = False

    def write(self, data: bytes, /) -> int:
        self.started = True
        self._sink.write(data)
        self.count += len(data)
        return len(data)


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
    ) -> None:
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

    # -- installation ---------------------------------------------------------------------
    def detect(self) -> EngineInfo | None:
        bin_dir = cluster.find_bin_dir(self._explicit_bin_dir)
        if bin_dir is None:
            return None
        try:
            major, full = cluster.server_version(bin_dir)
        except EngineError:
            return None
        self._bin_dir, self._version = bin_dir, (major, full)
        return EngineInfo(
            DATASTORE, major, True, extra={"server_version": full, "bin_dir": str(bin_dir)}
        )

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

    # -- managed instances: the server in a home -----------------------------------------
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

    # -- connections ------------------------------------------------------------------------
    @staticmethod
    def _conn_kwargs(connection: Connection, *, database: str | None = None) -> dict[str, Any]:
        if connection.get("managed"):
            return {
                "host": connection["socket_dir"],
                "port": int(connection["port"]),
                "user": connection["superuser"],
                "password": connection.get("password") or None,
                "dbname": database or connection.get("database", "postgres"),
            }
        return {
            "host": connection["host"],
            "port": int(connection["port"]),
            "user": connection["user"],
            "password": connection.get("password") or None,
            "dbname": database or connection.get("database") or "postgres",
        }

    def _connect(self, connection: Connection, **extra: Any) -> psycopg.Connection[Any]:
        kwargs = self._conn_kwargs(connection)
        kwargs.update(extra)
        return psycopg.connect(
            **{k: v for k, v in kwargs.items() if v is not None},
            connect_timeout=CONNECT_TIMEOUT,
            application_name="strongroom",
            autocommit=True,
        )

    def _replication_pgconn(self, connection: Connection) -> pq.PGconn:
        kwargs = self._conn_kwargs(connection)
        kwargs.update(
            replication="true", connect_timeout=CONNECT_TIMEOUT, application_name="strongroom"
        )
        conninfo = psycopg.conninfo.make_conninfo(
            **{k: v for k, v in kwargs.items() if v is not None}
        )
        pgconn = pq.PGconn.connect(conninfo.encode())
        if pgconn.status != pq.ConnStatus.OK:
            message = walstream._error_text(pgconn.error_message)
            pgconn.finish()
            raise BackupError(f"replication connection failed: {message}")
        return pgconn

    @staticmethod
    def _identify(pgconn: pq.PGconn) -> tuple[str, int, int]:
        """``(system_identifier, timeline, flush_lsn)`` from IDENTIFY_SYSTEM."""
        result = pgconn.exec_(b"IDENTIFY_SYSTEM")
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise BackupError(
                f"IDENTIFY_SYSTEM failed: {walstream._error_text(result.error_message)}"
            )
        values = [result.get_value(0, i) for i in range(3)]
        sysid, tli, xlogpos = (bytes(v or b"").decode() for v in values)
        return sysid, int(tli), parse_lsn(xlogpos)

    def _tool_env(self, connection: Connection) -> dict[str, str]:
        kwargs = self._conn_kwargs(connection)
        env = {
            "PGHOST": str(kwargs["host"]),
            "PGPORT": str(kwargs["port"]),
            "PGUSER": str(kwargs["user"]),
            "PGDATABASE": str(kwargs["dbname"]),
            "PGAPPNAME": "strongroom",
            "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
        }
        if kwargs.get("password"):
            env["PGPASSWORD"] = str(kwargs["password"])
        return env

    # -- managed instances -----------------------------------------------------------------
    def check_request(self, request: InstanceRequest) -> None:
        names.check_request(request)

    def create_instance(self, home: Path, request: InstanceRequest) -> Connection:
        home = Path(home)
        names.check_request(request)
        password = secrets.token_urlsafe(24)
        server = self._server(home, ManagedServer.new_identity(home))
        try:
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
                "slot": SLOT_PREFIX + secrets.token_hex(4),
                "users": [],
                "databases": [],
            }
            self._apply_request(connection, request)
            return connection
        except EngineError as exc:
            server.destroy(quietly=True)
            raise InstanceError(_scrub(str(exc), password)) from exc
        except (OSError, psycopg.Error) as exc:
            server.destroy(quietly=True)
            raise InstanceError(
                f"could not create the instance: {_scrub(_pg_error(exc), password)}"
            ) from exc
        except BaseException:
            server.destroy(quietly=True)
            raise

    def _apply_request(self, connection: Connection, request: InstanceRequest) -> None:
        """Create the requested databases and users (with their grants)."""
        wanted_dbs = [d.name for d in request.databases]
        for user in request.users:
            wanted_dbs.extend(db for db in user.databases if db not in wanted_dbs)
        users: list[str] = list(connection.get("users", []))
        databases: list[str] = list(connection.get("databases", []))
        with self._connect(connection) as conn:
            existing = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
            for name in wanted_dbs:
                if name not in existing:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                if name not in databases:
                    databases.append(name)
            for user in request.users:
                verifier = conn.pgconn.encrypt_password(
                    user.password.encode(), user.name.encode(), b"scram-sha-256"
                ).decode()
                exists = conn.execute(
                    "SELECT 1 FROM pg_roles WHERE rolname = %s", (user.name,)
                ).fetchone()
                if exists:
                    # Altering it would hand the requester a role someone else made
                    # (a restored server's own, its superuser among them).
                    raise InvalidRequestError(f"user {user.name!r} already exists")
                conn.execute(
                    sql.SQL("CREATE ROLE {} " + CREATED_ROLE_OPTIONS + " PASSWORD {}").format(
                        sql.Identifier(user.name), sql.Literal(verifier)
                    )
                )
                for db in user.databases:
                    conn.execute(
                        sql.SQL("GRANT ALL PRIVILEGES ON DATABASE {} TO {}").format(
                            sql.Identifier(db), sql.Identifier(user.name)
                        )
                    )
                    # Like Trove's "ALL on the database": the schema and what is in it.
                    with self._connect(connection, dbname=db) as dbconn:
                        for stmt in (
                            "GRANT ALL ON SCHEMA public TO {}",
                            "GRANT ALL ON ALL TABLES IN SCHEMA public TO {}",
                            "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {}",
                        ):
                            dbconn.execute(sql.SQL(stmt).format(sql.Identifier(user.name)))
                if user.name not in users:
                    users.append(user.name)
        connection["users"] = users
        connection["databases"] = databases

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
        server.remove_stale_pid()  # pg_ctl status said not running
        updated["port"] = server.start(int(connection["port"]))
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
        home = Path(home)
        if not connection.get("managed", True):
            # Forget an external server: drop its slot, so the server stops keeping WAL
            # for us. The walsender of a backup that just ended may hold it a moment.
            with contextlib.suppress(Exception), self._connect(connection) as conn:
                busy_until = time.monotonic() + SLOT_BUSY_WAIT
                while True:
                    row = conn.execute(
                        "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                        (connection.get("slot"),),
                    ).fetchone()
                    if row is None:
                        break
                    if not row[0]:
                        conn.execute(
                            "SELECT pg_drop_replication_slot(%s)", (connection.get("slot"),)
                        )
                        break
                    if time.monotonic() > busy_until:
                        break
                    time.sleep(0.2)
            return
        self._server(home).destroy()

    # -- external instances ------------------------------------------------------------------
    def register_external(self, params: Mapping[str, Any], *, project_id: str) -> Connection:
        host = str(params.get("host") or "").strip()
        if not host:
            raise InvalidExternalError("host is required")
        if not self.allowed_hosts.allows_host(host, project_id):
            if not self.allowed_hosts.for_project(project_id):
                raise ExternalNotAllowedError(
                    "external PostgreSQL servers are not allowed on this service "
                    "(the operator's allowed hosts list is empty)"
                )
            raise ExternalNotAllowedError(
                f"host {host!r} is not in the operator's list of allowed PostgreSQL hosts"
            )
        try:
            port = int(params.get("port") or 5432)
        except (TypeError, ValueError) as exc:
            raise InvalidExternalError("port must be a number") from exc
        if not 0 < port < 65536:
            raise InvalidExternalError("port must be between 1 and 65535")
        user = str(params.get("user") or "").strip()
        if not user:
            raise InvalidExternalError("user is required")
        password = params.get("password")
        connection: Connection = {
            "host": host,
            "port": port,
            "user": user,
            "password": str(password) if password is not None else "",
            "database": str(params.get("database") or "postgres"),
            "managed": False,
            "slot": SLOT_PREFIX + secrets.token_hex(4),
        }
        where = f"{host}:{port}"
        try:
            with self._connect(connection) as conn:
                row = conn.execute(
                    "SELECT rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user"
                ).fetchone()
                if row is None or not (row[0] or row[1]):
                    raise InvalidExternalError(f"role {user} lacks the REPLICATION attribute")
                version_num = int(conn.execute("SHOW server_version_num").fetchone()[0])
                wal_level = conn.execute("SHOW wal_level").fetchone()[0]
                senders = int(conn.execute("SHOW max_wal_senders").fetchone()[0])
                keep = conn.execute("SHOW max_slot_wal_keep_size").fetchone()[0]
                in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        except psycopg.Error as exc:
            raise InvalidExternalError(
                f"cannot connect to {where}: {_scrub(_pg_error(exc), connection['password'])}"
            ) from exc
        major = str(version_num // 10000)
        if major != self.major:
            raise InvalidExternalError(
                f"server at {where} runs PostgreSQL {major}, this host runs {self.major}"
            )
        if wal_level not in ("replica", "logical"):
            raise InvalidExternalError(
                f"server at {where} has wal_level={wal_level}; "
                "physical backups need wal_level=replica"
            )
        if senders < 2:
            raise InvalidExternalError(f"server at {where} needs max_wal_senders of at least 2")
        if in_recovery:
            raise InvalidExternalError(f"server at {where} is a standby; register its primary")
        try:
            pgconn = self._replication_pgconn(connection)
            try:
                sysid, _tli, _pos = self._identify(pgconn)
            finally:
                pgconn.finish()
        except BackupError as exc:
            raise InvalidExternalError(
                f"server at {where} refuses replication connections for role {user}: "
                f"{_scrub(str(exc), connection['password'])}"
            ) from exc
        connection["system_identifier"] = sysid
        connection["max_slot_wal_keep_size"] = keep
        if params.get("data_dir") is not None:
            connection["data_dir"] = self._check_external_data_dir(
                connection, params["data_dir"], sysid, project_id
            )
        return connection

    def external_identity(self, connection: Connection) -> str:
        sysid = connection.get("system_identifier")
        if connection.get("data_dir"):
            return f"postgresql:datadir:{connection['data_dir']}"
        return f"postgresql:{connection.get('host')}:{connection.get('port')}:{sysid}"

    def _check_external_data_dir(
        self, connection: Connection, given: Any, sysid: str, project_id: str
    ) -> str:
        """A server on this host may name its data directory: its backups then read the
        files (page incrementals) instead of ``pg_basebackup`` and retained WAL."""
        if not isinstance(given, str) or not given.startswith("/"):
            raise InvalidExternalError("data_dir must be an absolute path")
        resolved = Path(given).resolve()
        if not self.allowed_data_dirs.allows_path(resolved, project_id):
            raise ExternalNotAllowedError(
                "the data directory is not inside a directory the operator allows "
                "external PostgreSQL servers to use"
            )
        try:
            with self._connect(connection) as conn:
                row = conn.execute(
                    "SELECT (SELECT setting FROM pg_settings WHERE name = 'data_directory'), "
                    "has_function_privilege('pg_backup_start(text, boolean)', 'EXECUTE') "
                    "AND has_function_privilege('pg_backup_stop(boolean)', 'EXECUTE')"
                ).fetchone()
        except psycopg.Error as exc:
            raise InvalidExternalError(
                f"cannot read the server's settings: {_pg_error(exc)}"
            ) from exc
        assert row is not None
        if not row[1]:
            raise InvalidExternalError("the role may not run pg_backup_start and pg_backup_stop")
        if not row[0] or Path(str(row[0])).resolve() != resolved:
            raise InvalidExternalError(
                "the data directory given is not the server's data directory (or the role "
                "cannot read the data_directory setting)"
            )
        try:
            with beneath.directory(resolved) as root_fd:
                found = datadir.system_identifier(root_fd)
        except datadir.DataDirError as exc:
            raise InvalidExternalError(f"the data directory cannot be read: {exc}") from exc
        except OSError as exc:
            raise InvalidExternalError(
                f"this host cannot read the server's data directory: {exc.strerror}"
            ) from exc
        if found != sysid:
            raise InvalidExternalError("the data directory belongs to another server")
        return str(resolved)

    # -- both ------------------------------------------------------------------------------
    def public_view(self, connection: Connection) -> dict[str, Any]:
        if connection.get("managed"):
            return {
                "managed": True,
                "host": connection.get("host"),
                "port": connection.get("port"),
                "databases": list(connection.get("databases", [])),
                "users": list(connection.get("users", [])),
            }
        view = {
            "managed": False,
            "host": connection.get("host"),
            "port": connection.get("port"),
            "database": connection.get("database"),
            "user": connection.get("user"),
        }
        if connection.get("data_dir"):
            view["data_dir"] = connection["data_dir"]
        return view

    def data_size(self, connection: Connection) -> int | None:
        try:
            with self._connect(connection) as conn:
                row = conn.execute(
                    "SELECT sum(pg_database_size(oid))::bigint FROM pg_database "
                    "WHERE datallowconn AND has_database_privilege(oid, 'CONNECT')"
                ).fetchone()
        except psycopg.Error:
            return None
        return int(row[0]) if row and row[0] is not None else None

    # -- backup ----------------------------------------------------------------------------
    def backup(
        self, connection: Connection, sink: ByteSink, *, parent: Metadata | None
    ) -> BackupResult:
        password = connection.get("password")
        try:
            if self._reads_files(connection):
                return self._file_backup(connection, sink, parent)
            if parent is None:
                return self._full_backup(connection, sink)
            return self._incremental_backup(connection, sink, parent)
        except datadir.DataDirError as exc:
            raise BackupError(str(exc)) from exc
        except OSError as exc:
            raise BackupError(f"reading the data directory failed: {exc}") from exc
        except BackupError as exc:
            raise BackupError(_scrub(str(exc), password)) from exc
        except psycopg.Error as exc:
            raise BackupError(
                f"PostgreSQL backup failed: {_scrub(_pg_error(exc), password)}"
            ) from exc

    def _server_facts(self, conn: psycopg.Connection[Any]) -> dict[str, Any]:
        row = conn.execute(
            "SELECT current_setting('server_version_num')::int, "
            "current_setting('server_version'), "
            "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), "
            "current_setting('block_size')::int, "
            "current_setting('data_checksums'), "
            "(SELECT rolname FROM pg_roles WHERE oid = 10), "
            "pg_is_in_recovery()"
        ).fetchone()
        assert row is not None
        if row[6]:
            raise BackupError("the server is a standby; back up its primary")
        version_full = str(row[1]).split()[0]
        return {
            "server_version_num": int(row[0]),
            "server_version": version_full,
            "server_major": str(int(row[0]) // 10000),
            "wal_segment_size": int(row[2]),
            "block_size": int(row[3]),
            "data_checksums": row[4] == "on",
            "bootstrap_superuser": row[5],
        }

    def _slot_state(
        self, conn: psycopg.Connection[Any], slot: str
    ) -> tuple[int | None, str] | None:
        row = conn.execute(
            "SELECT restart_lsn::text, coalesce(wal_status, '') FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (slot,),
        ).fetchone()
        if row is None:
            return None
        return (parse_lsn(row[0]) if row[0] else None), row[1]

    def _full_backup(self, connection: Connection, sink: ByteSink) -> BackupResult:
        slot = connection.get("slot") or SLOT_PREFIX + "default"
        with self._connect(connection) as conn:
            facts = self._server_facts(conn)
            state = self._slot_state(conn, slot)
            if state is not None and (state[0] is None or state[1] == "lost"):
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                state = None
            if state is None:
                # Created before the backup starts, the slot keeps every WAL segment from
                # here on: the ones pg_basebackup fetches at its end and the ones the next
                # incremental streams.
                conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
        pgconn = self._replication_pgconn(connection)
        try:
            sysid, _tli, _ = self._identify(pgconn)
        finally:
            pgconn.finish()
        counter = _CountingSink(sink)
        try:
            stderr = process.stream_out(
                [
                    self._tool("pg_basebackup"),
                    "-D",
                    "-",
                    "-F",
                    "t",
                    "-X",
                    "fetch",
                    "-c",
                    "fast",
                    "-v",
                    "-l",
                    "strongroom",
                    "--manifest-checksums=CRC32C",
                ],
                counter,
                env=self._tool_env(connection),
                timeout=self.timeout,
            )
        except process.ProcessError as exc:
            raise BackupError(f"pg_basebackup failed: {exc}") from exc
        start = _START_RE.search(stderr)
        end = _END_RE.search(stderr)
        if not start or not end:
            raise BackupError(f"pg_basebackup did not report its WAL range: {stderr[-500:]}")
        start_lsn, timeline, stop_lsn = (
            parse_lsn(start.group(1)),
            int(start.group(2)),
            parse_lsn(end.group(1)),
        )
        with contextlib.suppress(psycopg.Error), self._connect(connection) as conn:
            # A new full backup starts a new chain: release the WAL before it.
            conn.execute(
                "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, format_lsn(stop_lsn))
            )
        metadata: Metadata = {
            "method": FULL_METHOD,
            "format": 1,
            "start_lsn": format_lsn(start_lsn),
            "stop_lsn": format_lsn(stop_lsn),
            "timeline": timeline,
            "system_identifier": sysid,
            "slot": slot,
            "stream_bytes": counter.count,
            **facts,
        }
        return BackupResult(metadata=metadata, incremental=False)

    @staticmethod
    def _reads_files(connection: Connection) -> bool:
        """Servers whose data directory this host can read (managed ones, and external
        ones registered with ``data_dir``) are backed up by reading their files."""
        data_dir = connection.get("data_dir")
        return bool(data_dir and os.access(Path(data_dir) / "PG_VERSION", os.R_OK))

    def _file_backup(
        self, connection: Connection, sink: ByteSink, parent: Metadata | None
    ) -> BackupResult:
        data = Path(connection["data_dir"])
        deadline = time.monotonic() + self.timeout
        pgconn = self._replication_pgconn(connection)
        try:
            sysid, timeline, _ = self._identify(pgconn)
            slot = self._reserve_wal(pgconn)
            with self._connect(connection) as conn:
                facts = self._server_facts(conn)
                threshold, known_databases = None, set[str]()
                if parent is not None:
                    threshold, known_databases = self._page_threshold(
                        conn, parent, facts, sysid, timeline
                    )
                row = conn.execute("SELECT pg_backup_start('strongroom', true)::text").fetchone()
                assert row is not None
                start = parse_lsn(row[0])
                # Databases committed now were completely on disk before the copy starts,
                # so the next incremental may take only their changed pages.
                databases = [f"base/{r[0]}" for r in conn.execute("SELECT oid FROM pg_database")]
                counter = _CountingSink(sink)
                writer = filestream.DirStreamWriter(
                    counter,
                    {
                        "kind": "full" if parent is None else "pages",
                        "block_size": facts["block_size"],
                        "timeline": timeline,
                        "start_lsn": format_lsn(start),
                        "threshold_lsn": None if threshold is None else format_lsn(threshold),
                    },
                )
                with beneath.directory(data) as root_fd:
                    if datadir.system_identifier(root_fd) != sysid:
                        raise BackupError(
                            "the data directory is not the server's (another system "
                            "identifier in its pg_control)"
                        )
                    pages = self._copy_files(root_fd, writer, threshold, known_databases)
                # Closing the session would also end the backup; this returns its label.
                row = conn.execute(
                    "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
                ).fetchone()
                assert row is not None
            stop = parse_lsn(row[0])
            if row[2]:
                raise BackupError("tablespaces are not supported")
            writer.label(row[1], "")
            # From the start of the page holding the redo point: recovery checks that
            # page's header too.
            wal_start = start - start % XLOG_BLCKSZ
            window = walstream.WalWindow(
                timeline, facts["wal_segment_size"], wal_start, stop, sysid
            )
            self._stream_window(pgconn, slot, window, counter, deadline)
        except walstream.WalStreamError as exc:
            raise BackupError(f"streaming WAL failed: {exc}") from exc
        finally:
            pgconn.finish()
        metadata: Metadata = {
            "method": FILES_FULL_METHOD if parent is None else FILES_INCREMENTAL_METHOD,
            "format": 1,
            "start_lsn": format_lsn(start),
            "stop_lsn": format_lsn(stop),
            "wal_start_lsn": format_lsn(wal_start),
            "timeline": timeline,
            "system_identifier": sysid,
            "databases": databases,
            "stream_bytes": counter.count,
            "segment_offsets": writer.segment_offsets,
            **facts,
        }
        if threshold is not None:
            metadata["threshold_lsn"] = format_lsn(threshold)
            metadata["changed_pages"] = pages
        return BackupResult(metadata=metadata, incremental=parent is not None)

    @staticmethod
    def _reserve_wal(pgconn: pq.PGconn) -> str:
        """A temporary slot on this replication connection: it keeps the backup's WAL
        window until it is streamed, and goes away with the connection."""
        slot = f"{SLOT_PREFIX}tmp_{secrets.token_hex(6)}"
        result = pgconn.exec_(
            f"CREATE_REPLICATION_SLOT {slot} TEMPORARY PHYSICAL RESERVE_WAL".encode()
        )
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise BackupError(
                "could not reserve the WAL for the backup: "
                f"{walstream._error_text(result.error_message)}"
            )
        return slot

    def _page_threshold(
        self,
        conn: psycopg.Connection[Any],
        parent: Metadata,
        facts: Mapping[str, Any],
        sysid: str,
        timeline: int,
    ) -> tuple[int, set[str]]:
        """The LSN from which pages count as changed (the parent's start) and the
        databases whose pages may be filtered by it; raises when the parent is no base."""
        if parent.get("method") not in FILE_METHODS:
            raise BackupError(
                "the parent backup was taken with pg_basebackup, this server's "
                "backups now read its files; take a full backup"
            )
        self._check_parent(parent, facts, sysid, timeline)
        threshold = parse_lsn(str(parent["start_lsn"]))
        row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        assert row is not None
        if threshold > parse_lsn(row[0]):
            raise BackupError(
                f"the parent backup started at {format_lsn(threshold)}, after the "
                f"server's current WAL position {row[0]}; take a full backup"
            )
        return threshold, set(parent.get("databases") or ())

    @staticmethod
    def _stream_window(
        pgconn: pq.PGconn,
        slot: str,
        window: walstream.WalWindow,
        sink: ByteSink,
        deadline: float,
    ) -> None:
        """The backup's own WAL, after its files, in the WAL-range stream format."""
        walstream.write_header(sink, window.header())
        frames = walstream.FrameWriter(sink)
        walstream.stream_wal_range(
            pgconn,
            slot=slot,
            timeline=window.timeline,
            start=window.start,
            stop=window.stop,
            frames=frames,
            deadline=deadline,
        )
        frames.close()

    @staticmethod
    def _copy_files(
        root_fd: int,
        writer: filestream.DirStreamWriter,
        threshold: int | None,
        known_databases: set[str],
    ) -> int:
        """Every file of the data directory held by ``root_fd`` (see :func:`datadir.walk`:
        by descriptor, never through a link); with ``threshold``, only the pages changed
        since then of relation files in ``known_databases`` (or ``global``). The control
        file goes last, as ``pg_basebackup`` sends it. Returns pages copied."""
        pages = 0
        owner = os.fstat(root_fd).st_uid
        for entry in datadir.walk(root_fd):
            if entry.is_dir:
                writer.directory(entry.path)
                continue
            if entry.path == "global/pg_control":
                continue
            opened = datadir.open_file(entry, owner)
            if opened is None:
                continue  # dropped while the backup runs; the WAL window replays that
            fd, size = opened
            try:
                if (
                    threshold is not None
                    and entry.is_relation
                    and (entry.database is None or entry.database in known_databases)
                ):
                    pages += writer.changed_pages(entry.path, fd, size, threshold)
                else:
                    writer.whole_file(entry.path, fd, size)
            finally:
                os.close(fd)
        fd, size = datadir.open_path(root_fd, "global/pg_control")
        try:
            writer.whole_file("global/pg_control", fd, size)
        finally:
            os.close(fd)
        return pages

    def _check_parent(
        self, parent: Metadata, facts: Mapping[str, Any], sysid: str, timeline: int
    ) -> int:
        if parent.get("method") not in (FULL_METHOD, INCREMENTAL_METHOD, *FILE_METHODS):
            raise BackupError("the parent is not a PostgreSQL backup of this engine")
        if str(parent.get("system_identifier")) != sysid:
            raise BackupError(
                "the parent backup is from another server (system identifier "
                f"{parent.get('system_identifier')}, this server {sysid}); take a full backup"
            )
        if str(parent.get("server_major")) != facts["server_major"]:
            raise BackupError(
                f"the parent backup is from PostgreSQL {parent.get('server_major')}, "
                f"the server now runs {facts['server_major']}; take a full backup"
            )
        if int(parent.get("timeline", -1)) != timeline:
            raise BackupError(
                f"the server's timeline changed since the parent (parent on timeline "
                f"{parent.get('timeline')}, server on {timeline}); take a full backup"
            )
        return parse_lsn(str(parent["stop_lsn"]))

    def _incremental_backup(
        self, connection: Connection, sink: ByteSink, parent: Metadata
    ) -> BackupResult:
        slot = connection.get("slot") or SLOT_PREFIX + "default"
        if parent.get("method") in FILE_METHODS:
            raise BackupError(
                "the parent backup read the server's files, which this host cannot; "
                "take a full backup"
            )
        if parent.get("slot") not in (None, slot):
            raise BackupError(
                "the parent backup was taken through another registration "
                "of this server; take a full backup"
            )
        deadline = time.monotonic() + self.timeout
        pgconn = self._replication_pgconn(connection)
        try:
            sysid, timeline, _ = self._identify(pgconn)
            with self._connect(connection) as conn:
                facts = self._server_facts(conn)
                start = self._check_parent(parent, facts, sysid, timeline)
                state = self._slot_state(conn, slot)
                if state is None:
                    raise BackupError(
                        f"replication slot {slot} is gone, so the WAL since the parent was "
                        "not kept; take a full backup"
                    )
                restart, wal_status = state
                if wal_status == "lost" or restart is None:
                    raise BackupError(
                        "the WAL since the parent was removed (the replication slot exceeded "
                        "max_slot_wal_keep_size); take a full backup"
                    )
                if restart > start:
                    raise BackupError(
                        f"the WAL since the parent ({format_lsn(start)}) was released "
                        f"(kept from {format_lsn(restart)} only); take a full backup"
                    )
                stop = self._end_point(conn)
            if stop < start:
                raise BackupError("the server's WAL is behind the parent backup")
            window = walstream.WalWindow(timeline, facts["wal_segment_size"], start, stop, sysid)
            counter = _CountingSink(sink)
            walstream.write_header(counter, window.header())
            frames = walstream.FrameWriter(counter)
            self._stream_with_retry(pgconn, slot, timeline, start, stop, frames, deadline)
            frames.close()
        except walstream.WalStreamError as exc:
            raise BackupError(f"streaming WAL failed: {exc}") from exc
        finally:
            pgconn.finish()
        metadata: Metadata = {
            "method": INCREMENTAL_METHOD,
            "format": 1,
            "start_lsn": format_lsn(start),
            "stop_lsn": format_lsn(stop),
            "timeline": timeline,
            "system_identifier": sysid,
            "slot": slot,
            "wal_bytes": stop - start,
            "stream_bytes": counter.count,
            "parent_stop_lsn": parent["stop_lsn"],
            **facts,
        }
        return BackupResult(metadata=metadata, incremental=True)

    @staticmethod
    def _end_point(conn: psycopg.Connection[Any]) -> int:
        """A WAL record boundary covering every transaction committed so far, made
        durable: the insert position read inside a transaction whose commit (which
        follows it in the WAL) is flushed synchronously."""
        conn.autocommit = False
        try:
            conn.execute("SET LOCAL synchronous_commit = on")
            conn.execute("SELECT pg_current_xact_id()")
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
            conn.commit()
        finally:
            conn.autocommit = True
        assert row is not None
        return parse_lsn(row[0])

    def _stream_with_retry(
        self,
        pgconn: pq.PGconn,
        slot: str,
        timeline: int,
        start: int,
        stop: int,
        frames: walstream.FrameWriter,
        deadline: float,
    ) -> None:
        busy_until = time.monotonic() + SLOT_BUSY_WAIT
        while True:
            try:
                walstream.stream_wal_range(
                    pgconn,
                    slot=slot,
                    timeline=timeline,
                    start=start,
                    stop=stop,
                    frames=frames,
                    deadline=deadline,
                )
                return
            except walstream.WalStreamError as exc:
                # A previous backup's walsender may still hold the slot for a moment.
                if "is active for PID" not in str(exc) or time.monotonic() > busy_until:
                    raise
                time.sleep(0.2)

    # -- restore ---------------------------------------------------------------------------
    def check_restorable(self, metadata: Metadata) -> None:
        method = metadata.get("method")
        if method not in (FULL_METHOD, INCREMENTAL_METHOD, *FILE_METHODS):
            raise IncompatibleBackupError(f"unknown PostgreSQL backup method {method!r}")
        major = str(metadata.get("server_major", ""))
        if major != self.major:
            raise IncompatibleBackupError(
                f"backup is from PostgreSQL {major or 'an unknown version'}, "
                f"this host runs {self.major}"
            )

    def _check_chain(self, chain: Sequence[RestoreInput]) -> None:
        if not chain:
            raise RestoreError("the restore chain is empty")
        for link in chain:
            self.check_restorable(link.metadata)
        first = chain[0].metadata
        if first["method"] not in FULL_METHODS:
            raise RestoreError("the restore chain does not start with a full backup")
        incremental = (
            FILES_INCREMENTAL_METHOD if first["method"] == FILES_FULL_METHOD else INCREMENTAL_METHOD
        )
        previous = first
        for link in chain[1:]:
            meta = link.metadata
            if meta["method"] in FULL_METHODS:
                raise RestoreError("a full backup appears after the start of the chain")
            if meta["method"] != incremental:
                raise RestoreError("the chain mixes backup methods")
            if str(meta["system_identifier"]) != str(first["system_identifier"]):
                raise RestoreError("the chain mixes backups of different servers")
            if int(meta["timeline"]) != int(first["timeline"]):
                raise RestoreError("the chain spans a timeline change")
            if incremental == FILES_INCREMENTAL_METHOD:
                if parse_lsn(meta["threshold_lsn"]) != parse_lsn(previous["start_lsn"]):
                    raise RestoreError(
                        f"the chain has a gap: an incremental holds the pages changed since "
                        f"{meta['threshold_lsn']}, its parent started at {previous['start_lsn']}"
                    )
            elif parse_lsn(meta["start_lsn"]) != parse_lsn(previous["stop_lsn"]):
                raise RestoreError(
                    f"the chain has a gap: an incremental starts at {meta['start_lsn']}, "
                    f"its parent ends at {previous['stop_lsn']}"
                )
            previous = meta

    def restore_instance(
        self, home: Path, chain: Sequence[RestoreInput], request: InstanceRequest
    ) -> Connection:
        home = Path(home)
        names.check_request(request)
        self._check_chain(chain)
        password = secrets.token_urlsafe(24)
        server = self._server(home, ManagedServer.new_identity(home))
        try:
            return self._restore(server, chain, request, password)
        except RestoreError as exc:
            server.destroy(quietly=True)
            raise RestoreError(_scrub(str(exc), password)) from exc
        except (EngineError, StreamFormatError, walstream.WalStreamError) as exc:
            server.destroy(quietly=True)
            raise RestoreError(_scrub(str(exc), password)) from exc
        except (OSError, psycopg.Error) as exc:
            server.destroy(quietly=True)
            raise RestoreError(f"restore failed: {_scrub(_pg_error(exc), password)}") from exc
        except BaseException:
            server.destroy(quietly=True)
            raise

    def _restore(
        self,
        server: ManagedServer,
        chain: Sequence[RestoreInput],
        request: InstanceRequest,
        password: str,
    ) -> Connection:
        full = chain[0].metadata
        server.prepare_home()
        data, run = server.data, server.run
        if full["method"] == FILES_FULL_METHOD:
            writer = self._lay_out_files(server, chain)
        else:
            writer = self._lay_out_base_backup(server, chain)
        timeline = int(full["timeline"])
        segment_size = int(full["wal_segment_size"])
        end = parse_lsn(chain[-1].metadata["stop_lsn"])
        self._end_wal_at(data / "pg_wal", writer, end, segment_size)
        superuser = str(full.get("bootstrap_superuser") or "postgres")
        self._configure_restored(server, superuser)
        server.chown_tree()
        port = server.start(None)
        connection: Connection = {
            "host": self.bind_address,
            "port": port,
            "socket_dir": str(run),
            "superuser": superuser,
            "password": password,
            "database": "postgres",
            "data_dir": str(data),
            "managed": True,
            "os_user": server.identity.name,
            "slot": SLOT_PREFIX + secrets.token_hex(4),
            "users": [],
            "databases": [],
        }
        self._wait_promoted(connection, server)
        self._check_recovery_end(server, timeline, end, segment_size)
        with self._connect(connection) as conn:
            dbs = [
                r[0]
                for r in conn.execute(
                    "SELECT datname FROM pg_database WHERE NOT datistemplate "
                    "AND datname <> 'postgres' ORDER BY datname"
                )
            ]
            roles = [
                r[0]
                for r in conn.execute(
                    "SELECT rolname FROM pg_roles WHERE rolcanlogin AND oid >= 16384 "
                    "ORDER BY rolname"
                )
            ]
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(superuser),
                    sql.Literal(
                        conn.pgconn.encrypt_password(
                            password.encode(), superuser.encode(), b"scram-sha-256"
                        ).decode()
                    ),
                )
            )
            server.remove_file("data/strongroom-recovery.conf")
            server.write_hba()  # the superuser has a password now: no more peer map
            conn.execute("SELECT pg_reload_conf()")
        connection["databases"] = dbs
        connection["users"] = roles
        self._apply_request(connection, request)
        return connection

    def _lay_out_base_backup(
        self, server: ManagedServer, chain: Sequence[RestoreInput]
    ) -> walstream.SegmentWriter:
        """``pg_basebackup`` tar, then each incremental's WAL into ``pg_wal``."""
        full = chain[0].metadata
        data, owner = server.data, server.identity.owner
        names = tarstream.extract(chain[0].stream, data, owner)
        if "PG_VERSION" not in names or "backup_label" not in names:
            raise RestoreError("the full backup stream is not a PostgreSQL base backup")
        if "backup_manifest" in names:
            try:
                process.run([self._tool("pg_verifybackup"), "-q", data], timeout=self.timeout)
            except process.ProcessError as exc:
                raise RestoreError(f"the full backup failed verification: {exc}") from exc
        writer = walstream.SegmentWriter(
            data / "pg_wal", int(full["timeline"]), int(full["wal_segment_size"]), owner
        )
        for link in chain[1:]:
            header = walstream.read_header(link.stream)
            self._check_wal_header(header, link.metadata, full)
            walstream.apply_wal_stream(link.stream, header, writer)
        return writer

    def _lay_out_files(
        self, server: ManagedServer, chain: Sequence[RestoreInput]
    ) -> walstream.SegmentWriter:
        """File-level links, newest first (see :mod:`filestream`); the newest link's
        label and WAL window make the directory consistent."""
        full = chain[0].metadata
        data, owner = server.data, server.identity.owner
        writer = walstream.SegmentWriter(
            data / "pg_wal", int(full["timeline"]), int(full["wal_segment_size"]), owner
        )
        with filestream.ChainRestorer(data, owner, workers=LAYOUT_THREADS) as restorer:
            for position, link in enumerate(reversed(chain)):
                self._lay_out_link(server, restorer, writer, link, full, newest=position == 0)
            names = restorer.finish()
        if "PG_VERSION" not in names or "global/pg_control" not in names:
            raise RestoreError("the backup stream is not a PostgreSQL data directory")
        return writer

    def _lay_out_link(
        self,
        server: ManagedServer,
        restorer: filestream.ChainRestorer,
        writer: walstream.SegmentWriter,
        link: RestoreInput,
        full: Metadata,
        *,
        newest: bool,
    ) -> None:
        meta = link.metadata

        def expect(header: dict[str, Any]) -> None:
            if header.get("start_lsn") != meta["start_lsn"] or header.get(
                "threshold_lsn"
            ) != meta.get("threshold_lsn"):
                raise RestoreError("a backup stream does not match its metadata")

        end = restorer.apply(link.stream, expect, meta.get("segment_offsets") or ())
        header = walstream.read_header(end.rest)
        self._check_wal_header(header, meta, full)
        if not newest:
            walstream.apply_wal_stream(end.rest, header, walstream.DISCARD)
            return
        walstream.apply_wal_stream(end.rest, header, writer)
        if "START WAL LOCATION" not in end.backup_label:
            raise RestoreError("the backup stream's label is malformed")
        server.write_file("backup_label", end.backup_label)

    @staticmethod
    def _check_wal_header(header: Mapping[str, Any], meta: Metadata, full: Metadata) -> None:
        if (
            header.get("start") != parse_lsn(meta.get("wal_start_lsn") or meta["start_lsn"])
            or header.get("stop") != parse_lsn(meta["stop_lsn"])
            or header.get("timeline") != int(full["timeline"])
            or header.get("segment_size") != int(full["wal_segment_size"])
        ):
            raise RestoreError("a backup stream's WAL does not match its metadata")

    @staticmethod
    def _end_wal_at(
        wal_dir: Path, writer: walstream.SegmentWriter, end: int, segment_size: int
    ) -> None:
        """Cut the WAL at the backup's end: recovery then stops exactly there."""
        last_segno = end // segment_size
        writer.end_at(end)
        for entry in wal_dir.iterdir():
            if is_segment_name(entry.name):
                _tli, segno = segment_number(entry.name, segment_size)
                if segno > last_segno:
                    entry.unlink()
            elif entry.name.endswith(".partial"):
                entry.unlink()

    def _configure_restored(self, server: ManagedServer, superuser: str) -> None:
        data = server.data
        for name in (
            "postmaster.pid",
            "postmaster.opts",
            "standby.signal",
            "recovery.signal",
            "strongroom-port.conf",
            "strongroom-recovery.conf",
        ):
            (data / name).unlink(missing_ok=True)
        extra: dict[str, str | int] = {}
        controldata = process.run([self._tool("pg_controldata"), "-D", data], timeout=60)
        for line in controldata.stdout.decode("utf-8", "replace").splitlines():
            key, _, value = line.partition(":")
            setting = _CONTROLDATA_SETTINGS.get(key.strip())
            if setting and value.strip().isdigit():
                extra[setting] = max(int(value.strip()), _SETTING_FLOORS[setting])
        source_conf = data / "postgresql.conf"
        if source_conf.exists():
            source_conf.rename(data / "postgresql.conf.source")
        server.write_file(
            "postgresql.conf",
            "# The source server's settings are kept in postgresql.conf.source.\n" + INCLUDE_LINES,
        )
        server.write_file(
            "postgresql.auto.conf",
            "# Do not edit this file manually!\n"
            "# It will be overwritten by the ALTER SYSTEM command.\n",
        )
        server.write_base_conf(extra, restoring_as=superuser)
        # Archive recovery from pg_wal only (restore_command finds nothing), to the end
        # of the WAL laid out above, then promotion onto a new timeline.
        server.write_file(
            "strongroom-recovery.conf",
            cluster.render_conf(
                {
                    "restore_command": "false",
                    "recovery_target_timeline": "current",
                    "hot_standby": "off",
                    "archive_mode": "off",
                }
            ),
        )
        server.write_file("recovery.signal", "")

    def _wait_promoted(self, connection: Connection, server: ManagedServer) -> None:
        deadline = time.monotonic() + self.timeout
        last_error = ""
        while time.monotonic() < deadline:
            try:
                with self._connect(connection) as conn:
                    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row is not None and not row[0]:
                    return
            except psycopg.Error as exc:
                last_error = _pg_error(exc)
            time.sleep(PROMOTION_POLL)
        raise RestoreError(
            "the restored server did not finish recovery in time: "
            f"{last_error or server.log_tail(5)}"
        )

    @staticmethod
    def _check_recovery_end(
        server: ManagedServer, timeline: int, end: int, segment_size: int
    ) -> None:
        """The new timeline's history file records where recovery ended: it must be the
        backup's end, or the WAL laid out was not replayed completely."""
        histories = sorted(
            (int(name[:8], 16), name)
            for name in server.list_dir("data/pg_wal")
            if name.endswith(".history") and len(name) == 16
        )
        if not histories:
            raise RestoreError("the restored server did not switch to a new timeline")
        _tli, name = histories[-1]
        switch: int | None = None
        text = server.read_file(f"data/pg_wal/{name}", 1 << 20).decode("utf-8", "replace")
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0].isdigit() and int(fields[0]) == timeline:
                switch = parse_lsn(fields[1])
        if switch is None:
            raise RestoreError("the restored server's timeline history is unexpected")
        if record_boundary(switch, segment_size) < record_boundary(end, segment_size):
            raise RestoreError(
                f"recovery stopped at {format_lsn(switch)} before the backup's end "
                f"{format_lsn(end)}: the WAL is incomplete or corrupted"
            )
