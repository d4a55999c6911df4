"""MariaDB engine: physical backups with mariabackup, managed servers with mariadbd.

Backup
    ``mariabackup --backup --stream=xbstream`` writes the backup to stdout, which is copied
    into the sink as it comes (no copy of the data on disk; ``--target-dir`` is an empty
    scratch directory). mariabackup copies the InnoDB files while tailing the redo log and
    takes ``BACKUP STAGE`` locks only for the final, short phase, so the backup is consistent
    under concurrent writes. ``--extra-lsndir`` makes it also write ``xtrabackup_checkpoints``
    and ``xtrabackup_info`` (the same files that travel in the stream) into a private scratch
    directory: after a successful run the engine parses them for ``from_lsn``, ``to_lsn``,
    ``last_lsn`` and the binary log file, position and GTID recorded under the backup lock,
    falling back to the ``MySQL binlog position`` line of the tool's stderr.
    An incremental backup passes ``--incremental-lsn=<parent to_lsn>``: only pages changed
    since then travel, as ``.delta`` files, plus the redo log written during the backup.

Restore
    Each link's stream is unpacked with ``mbstream -x`` (fed through stdin) into a scratch
    directory in ``home``; the full backup is prepared with ``mariabackup --prepare``, then
    each incremental is applied with ``--prepare --incremental-dir`` (MariaDB 10.2+
    semantics: no ``--apply-log-only``) and its scratch directory removed. The prepared
    backup is moved into the new data directory with ``--move-back``, handed to the server's
    user, and ``mariadbd`` is started once with an ``--init-file`` that (re)creates the
    service accounts with new passwords, so the restored server never shares credentials
    with its source.

Isolation
    When the service runs as root, each managed instance has an OS user of its own
    (``os_user`` in its connection), made with the instance and removed with it: mariadbd
    runs as it, its home and every directory in it are 0700 and its, and the tools that
    touch its files (mariabackup, mbstream) run as it too. ``secure_file_priv`` points at
    the instance's ``files`` directory, so a tenant with the FILE privilege reads and
    writes nothing else. An instance made before this (its files owned by ``mysql``) is
    handed to a user of its own on its next start.

Credentials
    The tools read passwords from a 0600 option file in a private 0700 directory passed as
    ``--defaults-file`` (so no system option file is read either); the server reads new
    account passwords from a 0600 init file that is deleted as soon as the server accepts
    connections. Nothing secret is ever on a command line.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql

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
    InstanceError,
    InvalidExternalError,
    InvalidRequestError,
    RestoreError,
)
from strongroom.engines.identity import IdentityError, InstanceIdentity, name_for
from strongroom.engines.mariadb import accounts, config, metadata, server
from strongroom.engines.mariadb.accounts import ADMIN_USER, BACKUP_PRIVILEGES, BACKUP_USER
from strongroom.engines.mariadb.server import Layout

START_TIMEOUT = 120.0
_ERROR_LINE = re.compile(
    r"error|fatal|failed|cannot|can't|denied|gone away|invalid|corrupt|mismatch", re.IGNORECASE
)
PORT_ATTEMPTS = 3
SEARCH_PATH = ("/usr/sbin", "/usr/local/sbin", "/usr/libexec", "/usr/local/mysql/bin")
# Options a restored server must share with the server the backup came from.
CARRIED_OPTIONS = ("innodb_page_size", "innodb_data_file_path", "innodb_undo_tablespaces")


@dataclass(frozen=True)
class Tools:
    mariadbd: str
    install_db: str
    mariabackup: str
    mbstream: str
    server_version: str  # "10.11.19-MariaDB-0+deb12u1"
    series: str  # "10.11"


def _which(*names: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SEARCH_PATH])
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


def _failure_reason(
    exc: process.ProcessError, tool: str | os.PathLike[str] | None = None, lines: int = 8
) -> str:
    """The tool's status and the stderr lines that say what went wrong (mariabackup logs
    every file it copies, so a plain tail is mostly noise). ``tool``: the name to give
    when the tool ran through ``runuser``."""
    head = str(exc).split(":", 1)[0]
    if tool is not None:
        head = head.replace(exc.tool, Path(tool).name, 1)
    tail = exc.stderr.strip().splitlines()
    errors = [line for line in tail if _ERROR_LINE.search(line)]
    chosen = (errors or tail)[-lines:]
    return head + (": " + "\n".join(chosen) if chosen else "")


def _scrub(text: str, secret_values: Sequence[str]) -> str:
    for value in secret_values:
        if value:
            text = text.replace(value, "***")
    return text


class MariaDbEngine:
    """The ``mariadb`` datastore: see the module documentation.

    ``bind_address``: where managed servers listen (each on a free port).
    ``allowed_hosts`` / ``allowed_datadirs``: the operator's allow-lists for external
    servers; both empty by default, so no external server can be registered.
    Managed servers run as an OS user of their own when the service runs as root (see
    :mod:`strongroom.engines.identity`), else as the service's user.
    ``timeout``: seconds any one tool run (backup, unpack, prepare) may take.
    """

    datastore = "mariadb"

    def __init__(
        self,
        *,
        bind_address: str = "127.0.0.1",
        allowed_hosts: AllowList | Sequence[str] = (),
        allowed_datadirs: AllowList | Sequence[Path] = (),
        timeout: float = 3600,
    ) -> None:
        self.bind_address = bind_address
        self.allowed_hosts = (
            allowed_hosts if isinstance(allowed_hosts, AllowList) else AllowList.of(allowed_hosts)
        )
        self.allowed_datadirs = (
            allowed_datadirs
            if isinstance(allowed_datadirs, AllowList)
            else AllowList.of_paths(allowed_datadirs)
        )
        self.timeout = timeout
        self._tools: Tools | None = None
        self._detected = False

    # -- detection -------------------------------------------------------------------------
    def _find_tools(self) -> Tools | None:
        mariadbd = _which("mariadbd", "mysqld")
        install_db = _which("mariadb-install-db", "mysql_install_db")
        mariabackup = _which("mariadb-backup", "mariabackup")
        mbstream = _which("mbstream")
        if not (mariadbd and install_db and mariabackup and mbstream):
            return None
        try:
            server_out = process.run([mariadbd, "--version"], timeout=60)
            tool_out = process.run([mariabackup, "--version"], timeout=60)
        except EngineError:
            return None
        server_text = server_out.stdout.decode("utf-8", "replace") + server_out.stderr
        if "mariadb" not in server_text.lower():
            return None  # a MySQL server: mariabackup cannot back it up
        server_version = metadata.parse_version(server_text)
        tool_version = metadata.parse_version(
            tool_out.stderr + tool_out.stdout.decode("utf-8", "replace")
        )
        if server_version is None or tool_version is None:
            return None
        if metadata.series(server_version) != metadata.series(tool_version):
            return None  # mariabackup must come from the server's own release series
        text = server_text.split("Ver", 1)[-1].split()[0] if "Ver" in server_text else ""
        return Tools(
            mariadbd=mariadbd,
            install_db=install_db,
            mariabackup=mariabackup,
            mbstream=mbstream,
            server_version=text or ".".join(map(str, server_version)),
            series=metadata.series(server_version),
        )

    def detect(self) -> EngineInfo | None:
        if not self._detected:
            self._tools = self._find_tools()
            self._detected = True
        if self._tools is None:
            return None
        return EngineInfo(
            self.datastore,
            self._tools.series,
            True,
            extra={"server_version": self._tools.server_version},
        )

    def _require(self) -> Tools:
        self.detect()
        if self._tools is None:
            raise EngineUnavailableError(
                "MariaDB is not installed on this host (mariadbd, mariadb-install-db, "
                "mariabackup and mbstream of one release series are needed)"
            )
        return self._tools

    # -- managed instances -------------------------------------------------------------------
    def check_request(self, request: InstanceRequest) -> None:
        accounts.check_request(request)

    def create_instance(self, home: Path, request: InstanceRequest) -> Connection:
        tools = self._require()
        layout = Layout(Path(home))
        if layout.datadir.exists() or layout.config.exists():
            raise InstanceError("the instance directory already holds a MariaDB server")
        try:
            accounts.check_request(request)
        except InvalidRequestError as exc:
            raise InstanceError(str(exc)) from None
        identity = InstanceIdentity.current()
        try:
            identity = _new_identity(layout, InstanceError)
            server.prepare_home(layout, identity)
            server.write_config(
                layout,
                port=server.free_port(self.bind_address),
                bind_address=self.bind_address,
                identity=identity,
            )
            argv = [
                tools.install_db,
                f"--defaults-file={layout.config}",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ]
            if identity.name is not None:
                argv.append(f"--user={identity.name}")
            try:
                process.run(argv, cwd=layout.home, timeout=min(self.timeout, 600))
            except process.ProcessError as exc:
                raise InstanceError(
                    f"the data directory could not be created: {_failure_reason(exc)}"
                ) from None
            server.close_datadir(layout)
            return self._boot(layout, identity, tools, request, InstanceError)
        except BaseException:
            self._discard(layout, identity)
            raise

    def restore_instance(
        self, home: Path, chain: Sequence[RestoreInput], request: InstanceRequest
    ) -> Connection:
        layout = Layout(Path(home))
        if layout.datadir.exists() or layout.config.exists():
            raise RestoreError("the instance directory already holds a MariaDB server")
        try:
            accounts.check_request(request)
        except InvalidRequestError as exc:
            raise RestoreError(str(exc)) from None
        identity = InstanceIdentity.current()
        try:
            tools = self._require()
            metadata.check_chain([link.metadata for link in chain], tools.series)
            identity = _new_identity(layout, RestoreError)
            server.prepare_home(layout, identity)
            carried = self._unpack_and_prepare(layout, identity, tools, chain)
            server.write_config(
                layout,
                port=server.free_port(self.bind_address),
                bind_address=self.bind_address,
                identity=identity,
                extra=carried,
            )
            base = layout.restore_dir / "base"
            self._run_tool(
                identity,
                layout,
                [
                    tools.mariabackup,
                    "--no-defaults",
                    "--move-back",
                    f"--datadir={layout.datadir}",
                    f"--target-dir={base}",
                ],
                "moving the prepared backup into the data directory",
            )
            shutil.rmtree(layout.restore_dir)
            server.close_datadir(layout)
            return self._boot(layout, identity, tools, request, RestoreError)
        except RestoreError:
            self._discard(layout, identity)
            raise
        except EngineError as exc:
            self._discard(layout, identity)
            raise RestoreError(str(exc)) from None
        except BaseException:
            self._discard(layout, identity)
            raise

    def _unpack_and_prepare(
        self,
        layout: Layout,
        identity: InstanceIdentity,
        tools: Tools,
        chain: Sequence[RestoreInput],
    ) -> dict[str, str]:
        """Unpack and prepare every link into ``restore/base`` (as the instance's OS user:
        the files are the tenant's); return the server options the backup was taken with
        that the new server must share."""
        identity.private_dir(layout.restore_dir)
        base = layout.restore_dir / "base"
        carried: dict[str, str] = {}
        for index, link in enumerate(chain):
            target = base if index == 0 else layout.restore_dir / f"incremental-{index}"
            identity.private_dir(target)
            what = "the full backup" if index == 0 else f"incremental backup {index}"
            try:
                process.stream_in(
                    identity.argv([tools.mbstream, "-x", "-C", target]),
                    link.stream,
                    cwd=layout.home,
                    timeout=self.timeout,
                )
            except process.ProcessError as exc:
                reason = _failure_reason(exc, tools.mbstream)
                raise RestoreError(f"unpacking {what} failed: {reason}") from None
            try:
                extracted = metadata.parse_checkpoints(
                    _read_beneath(target, "xtrabackup_checkpoints")
                )
            except (OSError, ValueError):
                raise RestoreError(
                    f"{what}'s stream is incomplete: it has no valid xtrabackup_checkpoints"
                ) from None
            metadata.check_extracted(extracted, link.metadata)
            if index == 0:
                carried = self._carried_options(base)
                argv = [tools.mariabackup, "--no-defaults", "--prepare", f"--target-dir={base}"]
            else:
                argv = [
                    tools.mariabackup,
                    "--no-defaults",
                    "--prepare",
                    f"--target-dir={base}",
                    f"--incremental-dir={target}",
                ]
            self._run_tool(identity, layout, argv, f"preparing {what}")
            if index > 0:
                shutil.rmtree(target)
        return carried

    @staticmethod
    def _carried_options(base: Path) -> dict[str, str]:
        try:
            text = _read_beneath(base, "backup-my.cnf")
        except OSError:
            return {}
        values = metadata.parse_key_values(text)
        carried = {key: values[key] for key in CARRIED_OPTIONS if values.get(key)}
        if carried.get("innodb_page_size") == "16384":
            del carried["innodb_page_size"]
        return carried

    def _run_tool(
        self,
        identity: InstanceIdentity,
        layout: Layout,
        argv: Sequence[str | os.PathLike[str]],
        what: str,
    ) -> None:
        try:
            process.run(identity.argv(argv), cwd=layout.home, timeout=self.timeout)
        except process.ProcessError as exc:
            raise RestoreError(f"{what} failed: {_failure_reason(exc, argv[0])}") from None

    def _boot(
        self,
        layout: Layout,
        identity: InstanceIdentity,
        tools: Tools,
        request: InstanceRequest,
        error: Callable[[str], EngineError],
    ) -> Connection:
        """First start of a new data directory: (re)create the service accounts with new
        passwords through an init file, then apply the request's databases and users."""
        admin_password = secrets.token_urlsafe(24)
        backup_password = secrets.token_urlsafe(24)
        init_file = layout.private_dir / "init.sql"
        init_file.unlink(missing_ok=True)
        config.write_private(
            init_file,
            accounts.service_accounts_sql(admin_password, backup_password),
            owner=identity.owner,
        )
        try:
            self._start(layout, tools, admin_password, error=error, init_file=init_file)
        finally:
            init_file.unlink(missing_ok=True)
        try:
            with server.session(layout, ADMIN_USER, admin_password) as cursor:
                accounts.drop_os_user_accounts(cursor)
                accounts.apply_request(cursor, request)
                users = accounts.list_users(cursor)
        except (pymysql.MySQLError, ValueError, InvalidRequestError) as exc:
            server.kill(layout)
            hidden = [admin_password, backup_password, *(u.password for u in request.users)]
            raise error(
                f"setting up databases and users failed: {_sql_error(exc, hidden)}"
            ) from None
        options = server.read_config(layout)
        return {
            "host": self.bind_address,
            "port": int(options["port"]),
            "socket": str(layout.socket),
            "datadir": str(layout.datadir),
            "defaults_file": str(layout.config),
            "admin_user": ADMIN_USER,
            "admin_password": admin_password,
            "backup_user": BACKUP_USER,
            "backup_password": backup_password,
            "managed": True,
            "os_user": identity.name,
            "instance_uid": secrets.token_hex(16),
            "users": users,
        }

    def _start(
        self,
        layout: Layout,
        tools: Tools,
        admin_password: str,
        *,
        error: Callable[[str], EngineError],
        init_file: Path | None = None,
    ) -> None:
        """Start, choosing another free port when the configured one was taken."""
        for attempt in range(PORT_ATTEMPTS):
            options = server.read_config(layout)
            if not server.port_is_free(self.bind_address, int(options["port"])):
                server.set_port(layout, server.free_port(self.bind_address))
            try:
                server.start(
                    layout,
                    mariadbd=tools.mariadbd,
                    user=ADMIN_USER,
                    password=admin_password,
                    timeout=min(self.timeout, START_TIMEOUT),
                    init_file=init_file,
                    error=error,
                )
                return
            except EngineError as exc:
                in_use = "Address already in use" in str(exc) or "Bind on TCP/IP" in str(exc)
                if not in_use or attempt == PORT_ATTEMPTS - 1:
                    raise
                server.set_port(layout, server.free_port(self.bind_address))

    def start_instance(self, home: Path, connection: Connection) -> Connection:
        tools = self._require()
        layout = Layout(Path(home))
        if not layout.config.exists() or not layout.datadir.exists():
            raise InstanceError("the instance's data directory is missing")
        password = str(connection["admin_password"])
        updated = dict(connection)
        if server.running_pid(layout) is None:
            identity = _identity_of(layout, connection)
            if identity.name is not None and layout.home.stat().st_uid != identity.uid:
                # Made before instances had OS users of their own (their server ran as
                # "mysql"), or its user was lost: its files go to its own user now.
                server.hand_over(layout, identity)
            updated["os_user"] = identity.name
            self._start(layout, tools, password, error=InstanceError)
        else:
            server.wait_ready(layout, ADMIN_USER, password, timeout=START_TIMEOUT)
        updated["port"] = int(server.read_config(layout)["port"])
        return updated

    def stop_instance(self, home: Path, connection: Connection) -> None:
        server.stop(Layout(Path(home)))

    def destroy_instance(self, home: Path, connection: Connection) -> None:
        layout = Layout(Path(home))
        server.stop(layout)
        shutil.rmtree(layout.home, ignore_errors=True)
        if layout.home.exists():
            raise InstanceError("the instance directory could not be removed")
        _remove_identity(layout, connection)

    def _discard(self, layout: Layout, identity: InstanceIdentity) -> None:
        """After a failed create or restore: nothing left running, nothing left on disk,
        no OS user left."""
        with contextlib.suppress(Exception):
            server.kill(layout)
        shutil.rmtree(layout.home, ignore_errors=True)
        with contextlib.suppress(IdentityError):
            identity.remove()

    # -- external instances ------------------------------------------------------------------
    def register_external(self, params: Mapping[str, Any], *, project_id: str) -> Connection:
        tools = self._require()
        host = params.get("host")
        port = params.get("port", 3306)
        user = params.get("user")
        password = params.get("password", "")
        datadir = params.get("datadir")
        if not isinstance(host, str) or not host.strip():
            raise InvalidExternalError("an external MariaDB server needs a host")
        if isinstance(port, bool) or not isinstance(port, int | str):
            raise InvalidExternalError("the port must be a number")
        try:
            port = int(port)
        except ValueError:
            raise InvalidExternalError("the port must be a number") from None
        if not 0 < port < 65536:
            raise InvalidExternalError("the port must be between 1 and 65535")
        if not isinstance(user, str) or not user:
            raise InvalidExternalError("an external MariaDB server needs a user")
        if not isinstance(password, str):
            raise InvalidExternalError("the password must be a string")
        if not isinstance(datadir, str) or not datadir.startswith("/"):
            raise InvalidExternalError(
                "an external MariaDB server needs its data directory as an absolute path "
                "(mariabackup reads the server's files)"
            )
        host = host.strip().lower()
        if not self.allowed_hosts.for_project(project_id):
            raise ExternalNotAllowedError(
                "registering external MariaDB servers is not enabled on this service "
                "(the operator has allowed no hosts)"
            )
        if not self.allowed_hosts.allows_host(host, project_id):
            raise ExternalNotAllowedError(
                f"the host {host!r} is not in the operator's list of allowed MariaDB hosts "
                "(mariabackup must run on the server's own host)"
            )
        resolved = Path(datadir).resolve()
        if not self.allowed_datadirs.allows_path(resolved, project_id):
            raise ExternalNotAllowedError(
                "the data directory is not inside a directory the operator allows "
                "external MariaDB servers to use"
            )
        for value in (user, password):
            try:
                config.option_value(value)
            except ValueError:
                raise InvalidExternalError(
                    "user and password must not contain control characters"
                ) from None
        connection: Connection = {
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "datadir": str(resolved),
            "managed": False,
        }
        try:
            with _external_session(connection) as cursor:
                cursor.execute("SELECT VERSION(), @@datadir, @@log_bin")
                version, server_datadir, log_bin = cursor.fetchone()
                cursor.execute(
                    "SELECT DISTINCT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES"
                )
                granted = {str(row[0]).upper() for row in cursor.fetchall()}
        except pymysql.MySQLError as exc:
            raise InvalidExternalError(
                f"cannot connect to the MariaDB server: {_sql_error(exc, [password])}"
            ) from None
        if "mariadb" not in str(version).lower():
            raise InvalidExternalError("the server is not MariaDB")
        server_series = metadata.series(str(version))
        if server_series != tools.series:
            raise InvalidExternalError(
                f"the server runs MariaDB {server_series}; this host's mariabackup backs "
                f"up MariaDB {tools.series} only"
            )
        if Path(str(server_datadir)).resolve() != resolved:
            raise InvalidExternalError(
                "the data directory given is not the server's data directory"
            )
        if "REPLICATION CLIENT" in granted:
            granted.add("BINLOG MONITOR")
        missing = [p for p in BACKUP_PRIVILEGES if p not in granted]
        if missing:
            raise InvalidExternalError(
                f"the user {user!r} lacks privileges mariabackup needs: "
                + ", ".join(missing)
                + f" (grant {', '.join(BACKUP_PRIVILEGES)} ON *.*)"
            )
        connection["server_version"] = str(version)
        connection["log_bin"] = bool(log_bin)
        connection["instance_uid"] = hashlib.sha256(
            f"{host}:{port}:{resolved}".encode()
        ).hexdigest()[:32]
        return connection

    def external_identity(self, connection: Connection) -> str:
        return f"mariadb:{connection.get('datadir')}"

    # -- both ---------------------------------------------------------------------------------
    def public_view(self, connection: Connection) -> dict[str, Any]:
        if connection.get("managed"):
            users = [
                {
                    "name": u["name"],
                    "host": u.get("host", "%"),
                    "databases": list(u.get("databases", [])),
                }
                for u in connection.get("users", [])
            ]
        else:
            users = [{"name": connection.get("user", "")}]
        return {"host": connection.get("host"), "port": connection.get("port"), "users": users}

    def data_size(self, connection: Connection) -> int | None:
        query = (
            "SELECT COALESCE(SUM(data_length + index_length), 0) "
            "FROM information_schema.TABLES WHERE table_schema NOT IN "
            "('information_schema', 'performance_schema', 'sys')"
        )
        if connection.get("managed"):
            try:
                with _managed_session(connection) as cursor:
                    cursor.execute(query)
                    return int(cursor.fetchone()[0])
            except (pymysql.MySQLError, OSError, KeyError):
                pass
        return _tree_size(Path(str(connection.get("datadir", ""))))

    def backup(
        self, connection: Connection, sink: ByteSink, *, parent: Metadata | None
    ) -> BackupResult:
        tools = self._require()
        if connection.get("managed"):
            user, password = str(connection["backup_user"]), str(connection["backup_password"])
        else:
            user, password = str(connection["user"]), str(connection.get("password", ""))
        source_id = str(connection.get("instance_uid", ""))
        incremental_lsn = metadata.check_parent(parent, tools.series, source_id) if parent else None
        server_version, page_size = self._probe(connection, user, password, tools)
        if connection.get("managed"):
            _checkpoint(connection)
        identity = _backup_identity(connection)
        with config.private_dir() as scratch:
            # mariabackup runs as the instance's OS user: it reads only what the server
            # itself could (a table a tenant placed elsewhere cannot pull a host file in).
            identity.chown(scratch)
            defaults = scratch / "client.cnf"
            config.write_private(
                defaults,
                config.render({"client": config.client_options(connection, user, password)}),
                owner=identity.owner,
            )
            target = scratch / "target"
            lsndir = scratch / "lsn"
            identity.private_dir(target)
            identity.private_dir(lsndir)
            argv: list[str | os.PathLike[str]] = [
                tools.mariabackup,
                f"--defaults-file={defaults}",
                "--backup",
                "--stream=xbstream",
                f"--target-dir={target}",
                f"--extra-lsndir={lsndir}",
                f"--datadir={connection['datadir']}",
            ]
            if not connection.get("managed"):
                # The same checkpoint, asked by mariabackup: it takes effect when the
                # account may SET GLOBAL (SUPER), else mariabackup goes on without it.
                argv.append("--innodb-log-checkpoint-now")
            if incremental_lsn is not None:
                argv.append(f"--incremental-lsn={incremental_lsn}")
            try:
                stderr = process.stream_out(
                    identity.argv(argv), sink, cwd=scratch, timeout=self.timeout
                )
            except process.ProcessError as exc:
                reason = _scrub(_failure_reason(exc, tools.mariabackup), [password])
                raise BackupError(f"the backup failed: {reason}") from None
            try:
                checkpoints = metadata.parse_checkpoints(
                    _read_beneath(lsndir, "xtrabackup_checkpoints")
                )
                info_text = _read_beneath(lsndir, "xtrabackup_info")
            except (OSError, ValueError) as exc:
                raise BackupError(f"mariabackup did not record the backup's LSNs: {exc}") from None
        expected = "incremental" if incremental_lsn is not None else "full-backuped"
        if checkpoints.backup_type != expected:
            raise BackupError(f"mariabackup made a {checkpoints.backup_type} backup")
        if incremental_lsn is not None and checkpoints.from_lsn != incremental_lsn:
            raise BackupError("mariabackup's incremental backup starts at another LSN")
        info = metadata.parse_key_values(info_text)
        binlog = metadata.parse_binlog_position(
            info.get("binlog_pos", "")
        ) or metadata.parse_binlog_position(stderr)
        result = metadata.build_metadata(
            checkpoints=checkpoints,
            info=info,
            binlog=binlog,
            server_series=tools.series,
            server_version=info.get("server_version", server_version),
            source_id=source_id,
            parent=parent,
            page_size=page_size,
        )
        return BackupResult(metadata=result, incremental=parent is not None)

    def _probe(
        self, connection: Connection, user: str, password: str, tools: Tools
    ) -> tuple[str, int | None]:
        """Reach the server before streaming: a clear reason when it is down or another
        release series than this host's mariabackup."""
        try:
            with _session(connection, user, password) as cursor:
                cursor.execute("SELECT VERSION(), @@innodb_page_size")
                version, page_size = cursor.fetchone()
        except pymysql.MySQLError as exc:
            raise BackupError(
                f"cannot connect to the MariaDB server: {_sql_error(exc, [password])}"
            ) from None
        if metadata.series(str(version)) != tools.series:
            raise BackupError(
                f"the server runs MariaDB {metadata.series(str(version))}; this host's "
                f"mariabackup backs up MariaDB {tools.series} only"
            )
        return str(version), int(page_size) if page_size is not None else None

    def check_restorable(self, metadata_: Metadata) -> None:
        tools = self._require()
        metadata.check_series(metadata_, tools.series)


# -- OS users ------------------------------------------------------------------------------------
def _new_identity(layout: Layout, error: Callable[[str], EngineError]) -> InstanceIdentity:
    try:
        return InstanceIdentity.for_home(layout.home)
    except IdentityError as exc:
        raise error(f"the instance's OS user could not be created: {exc}") from None


def _identity_of(layout: Layout, connection: Connection) -> InstanceIdentity:
    """The OS user a managed instance runs as: the one it recorded, else one of its own,
    made now (the service's own user when the service is not root)."""
    if os.geteuid() != 0:
        return InstanceIdentity.current()
    name = connection.get("os_user")
    found = InstanceIdentity.lookup(name) if isinstance(name, str) else None
    return found if found is not None else _new_identity(layout, InstanceError)


def _backup_identity(connection: Connection) -> InstanceIdentity:
    """Who runs mariabackup: a managed instance's OS user; the service for an external
    server (its files belong to its own OS user) and for an instance made before
    instances had OS users (until its next start hands it one)."""
    name = connection.get("os_user")
    if not connection.get("managed") or not isinstance(name, str) or os.geteuid() != 0:
        return InstanceIdentity.current()
    found = InstanceIdentity.lookup(name)
    if found is None:
        raise BackupError(f"the instance's OS user {name} is missing: restart the instance")
    return found


def _remove_identity(layout: Layout, connection: Connection) -> None:
    if os.geteuid() != 0:
        return
    names = {connection.get("os_user"), name_for(layout.home)}
    for name in names:
        found = InstanceIdentity.lookup(name) if isinstance(name, str) else None
        if found is None:
            continue
        try:
            found.remove()
        except IdentityError as exc:
            raise InstanceError(f"the instance's OS user could not be removed: {exc}") from None


def _read_beneath(directory: Path, name: str) -> str:
    """A small file a tool running as the instance's user wrote: never through a link."""
    with beneath.directory(directory) as dir_fd:
        fd, _ = beneath.open_regular(dir_fd, name)
        with os.fdopen(fd, "rb") as handle:
            return handle.read(1 << 20).decode("utf-8", "replace")


# -- SQL helpers --------------------------------------------------------------------------------
def _checkpoint(connection: Connection) -> None:
    """Flush every dirty page and write an InnoDB checkpoint before the copy.

    mariabackup copies the redo log from the server's last checkpoint: left alone, a full
    backup carries up to the whole log and the backup's ``to_lsn`` lags behind, so the next
    incremental holds every page changed since that older checkpoint too. The statement
    returns once the checkpoint is written."""
    try:
        with _managed_session(connection) as cursor:
            cursor.execute("SET GLOBAL innodb_log_checkpoint_now = ON")
    except pymysql.MySQLError as exc:
        reason = _sql_error(exc, [str(connection.get("admin_password", ""))])
        raise BackupError(f"the server could not write a checkpoint: {reason}") from None


def _sql_error(exc: Exception, secret_values: Sequence[str] = ()) -> str:
    if isinstance(exc, pymysql.MySQLError) and len(exc.args) >= 2:
        text = f"{exc.args[1]} (error {exc.args[0]})"
    else:
        text = str(exc)
    return _scrub(text, secret_values)


@contextlib.contextmanager
def _session(connection: Mapping[str, Any], user: str, password: str) -> Iterator[Any]:
    kwargs: dict[str, Any] = {
        "user": user,
        "password": password,
        "connect_timeout": 10,
        "read_timeout": 60,
        "write_timeout": 60,
        "autocommit": True,
        "charset": "utf8mb4",
    }
    if connection.get("managed") and connection.get("socket"):
        kwargs["unix_socket"] = str(connection["socket"])
    else:
        kwargs["host"] = str(connection["host"])
        kwargs["port"] = int(connection["port"])
    conn = pymysql.connect(**kwargs)
    try:
        with conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()


def _managed_session(connection: Mapping[str, Any]) -> contextlib.AbstractContextManager[Any]:
    return _session(connection, str(connection["admin_user"]), str(connection["admin_password"]))


def _external_session(connection: Mapping[str, Any]) -> contextlib.AbstractContextManager[Any]:
    return _session(connection, str(connection["user"]), str(connection["password"]))


def _tree_size(path: Path) -> int | None:
    if not path.is_dir():
        return None
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


__all__ = ["ADMIN_USER", "BACKUP_USER", "MariaDbEngine"]
