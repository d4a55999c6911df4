"""MariaDB engine: physical backups with mariabackup, managed servers with mariadbd.

This is the façade the service sees; each part lives in its own module:

- :mod:`.tools`: the installed programs (one release series) and their failure reasons;
- :mod:`.managed`: managed servers (create, first boot, start, stop, destroy), each
  instance under an OS user of its own; :mod:`.server` runs one ``mariadbd``;
- :mod:`.accounts`: the service's accounts and the request's users and databases;
- :mod:`.external`: registering an existing server on this host;
- :mod:`.backup`: full and incremental backups (``mariabackup --backup``);
- :mod:`.restore`: a chain of backups into a new managed server;
- :mod:`.metadata`: what a backup records, and the checks of a chain against it;
- :mod:`.archiver`, :mod:`.binlog`, :mod:`.replay`: binary log archiving for
  point-in-time restore (managed servers), and its replay up to a time after a restore.

Credentials: a tool that runs as an instance's OS user reads its password from an option
file it inherits as a descriptor (``--defaults-file=/dev/fd/N``, a sealed memory file with
no name: :func:`.tools.option_file`), so no system option file is read either and that
user cannot open it by name; the server reads new account passwords from a 0600 init file
that is deleted as soon as the server accepts connections. Nothing secret is ever on a
command line.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pymysql

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
from strongroom.engines.deadline import read_by, seconds_left
from strongroom.engines.errors import EngineUnavailableError, RestoreError
from strongroom.engines.mariadb import (
    accounts,
    archiver,
    backup,
    checks,
    external,
    metadata,
    models,
    replay,
    restore,
)
from strongroom.engines.mariadb.accounts import ADMIN_USER, BACKUP_USER
from strongroom.engines.mariadb.managed import ManagedServers
from strongroom.engines.mariadb.sessions import managed_session
from strongroom.engines.mariadb.tools import Tools, find_tools

# Bounds of a data directory's walk for its size (an external server's, whose users may
# fill it with anything): beyond them the size is unknown.
TREE_MAX_ENTRIES = 1_000_000
TREE_MAX_DEPTH = 32
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


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
        self.allowed_hosts = (
            allowed_hosts if isinstance(allowed_hosts, AllowList) else AllowList.of(allowed_hosts)
        )
        self.allowed_datadirs = (
            allowed_datadirs
            if isinstance(allowed_datadirs, AllowList)
            else AllowList.of_paths(allowed_datadirs)
        )
        self.timeout = timeout
        self._servers = ManagedServers(bind_address=bind_address, timeout=timeout)
        self._tools: Tools | None = None
        self._detected = False

    # -- detection -------------------------------------------------------------------------
    def detect(self) -> EngineInfo | None:
        if not self._detected:
            self._tools = find_tools()
            self._detected = True
        if self._tools is None:
            return None
        return EngineInfo(
            self.datastore,
            self._tools.series,
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
        return self._servers.create(self._require(), home, request)

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
        """``archive``: archived binary log batches replayed after the chain, up to
        ``target_time`` (naive UTC, to the whole second; ``None``: to their end). A
        ``target_time`` the archive does not reach is refused before anything is
        restored. ``timeout``: seconds the whole restore may take (and each step the
        engine's own)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            tools = self._require()
        except EngineUnavailableError as exc:
            raise RestoreError(str(exc)) from None
        if target_time is not None:
            replay.check_reaches(archive, target_time)
        restored = restore.restore(self._servers, tools, home, chain, request, deadline=deadline)
        if not archive:
            return restored
        try:
            replay.replay(
                restored,
                read_by(archive, deadline, RestoreError),
                [link.metadata for link in chain],
                target_time=target_time,
                timeout=seconds_left(deadline, self.timeout, RestoreError, "before the replay"),
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self._servers.destroy(Path(home), restored)
            raise
        return restored

    def start_instance(self, home: Path, connection: Connection) -> Connection:
        return self._servers.start(self._require(), home, connection)

    def stop_instance(self, home: Path, connection: Connection) -> None:
        self._servers.stop(home)

    def destroy_instance(self, home: Path, connection: Connection) -> None:
        self._servers.destroy(home, connection)

    def check_restored(
        self, home: Path, connection: Connection, *, timeout: float | None = None
    ) -> dict[str, Any]:
        limit = self.timeout if timeout is None else min(timeout, self.timeout)
        return checks.check_restored(connection, timeout=limit)

    # -- external instances ------------------------------------------------------------------
    def register_external(self, params: Mapping[str, Any], *, project_id: str) -> Connection:
        return external.register(
            self._require(),
            params,
            project_id=project_id,
            allowed_hosts=self.allowed_hosts,
            allowed_datadirs=self.allowed_datadirs,
        )

    def external_identity(self, connection: Connection) -> str:
        return external.identity(connection)

    # -- both ---------------------------------------------------------------------------------
    def public_view(self, connection: Connection) -> dict[str, Any]:
        typed = models.CONNECTION.validate_python(connection)
        view: dict[str, Any] = {"host": typed.host, "port": typed.port}
        if isinstance(typed, models.ManagedConnection):
            view["users"] = [
                u.model_dump(include={"name", "host", "databases"}) for u in typed.users
            ]
            if typed.databases is not None:
                view["databases"] = list(typed.databases)
        else:
            view["users"] = [{"name": typed.user}]
        return view

    def data_size(self, connection: Connection) -> int | None:
        query = (
            "SELECT COALESCE(SUM(data_length + index_length), 0) "
            "FROM information_schema.TABLES WHERE table_schema NOT IN "
            "('information_schema', 'performance_schema', 'sys')"
        )
        if connection.get("managed"):
            try:
                with managed_session(connection) as cursor:
                    cursor.execute(query)
                    return int(cursor.fetchone()[0])
            except (pymysql.MySQLError, OSError, KeyError):
                pass
        return _tree_size(Path(str(connection.get("datadir", ""))))

    def backup(
        self,
        connection: Connection,
        sink: ByteSink,
        *,
        parent: Metadata | None,
        parent_chain: ParentChain | None = None,
    ) -> BackupResult:
        return backup.backup(self._require(), connection, sink, parent=parent, timeout=self.timeout)

    # -- binary log archiving (point-in-time restore) -------------------------------------
    def start_archiving(self, connection: Connection) -> int:
        return archiver.start_archiving(connection)

    def archive_batch(self, connection: Connection, sink: ByteSink, *, start: int) -> ArchivedWal:
        batch = archiver.archive_batch(connection, sink, start=start)
        return batch.archived()

    def stop_archiving(self, connection: Connection) -> None:
        archiver.stop_archiving(connection)

    def check_restorable(self, metadata_: Metadata) -> None:
        tools = self._require()
        metadata.check_series(metadata_, tools.series)


def _tree_size(path: Path) -> int | None:
    """Bytes of the files under ``path`` (an external server's data directory, which its
    users may fill with anything): walked by descriptor, no link followed and nothing but
    directories opened, at most :data:`TREE_MAX_ENTRIES` entries and
    :data:`TREE_MAX_DEPTH` levels. ``None`` (size unknown) when ``path`` is no directory
    or the tree is beyond those bounds."""
    try:
        top = os.open(path, _OPEN_DIR)
    except OSError:
        return None
    try:
        return _dir_size(top, 0, [TREE_MAX_ENTRIES])
    except _TooLarge:
        return None
    finally:
        os.close(top)


class _TooLarge(Exception):
    """The tree has more entries or levels than a size is worth reading for."""


def _dir_size(fd: int, depth: int, budget: list[int]) -> int:
    total = 0
    with contextlib.suppress(OSError), os.scandir(fd) as entries:
        for entry in entries:
            budget[0] -= 1
            if budget[0] < 0:
                raise _TooLarge
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            if not stat.S_ISDIR(st.st_mode):
                total += st.st_size
                continue
            if depth + 1 >= TREE_MAX_DEPTH:
                raise _TooLarge
            try:
                inner = os.open(entry.name, _OPEN_DIR, dir_fd=fd)
            except OSError:
                continue  # gone, or swapped for something else meanwhile
            try:
                total += _dir_size(inner, depth + 1, budget)
            finally:
                os.close(inner)
    return total


__all__ = ["ADMIN_USER", "BACKUP_USER", "MariaDbEngine"]
