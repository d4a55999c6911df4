"""``SqliteEngine``: SQLite files as instances, backed up as consistent page images.

Connections are ``{"path": "/resolved/file.db", "root": "/resolved/dir", "dev": n, "ino": n}``:
the file, the directory it is reached from (an allow-list root, or a managed instance's
home) and its ``(st_dev, st_ino)``. Every access opens the root and walks beneath it by
descriptor, never through a link, and checks the file is still the one registered
(:mod:`strongroom.engines.sqlite.files`).

Managed instances are one file, ``<home>/data.db`` (0600 in a 0700 home, like the ``-wal``
and ``-shm`` files SQLite creates after it), created in WAL mode: readers never
block the writer, so a backup does not stall the application either (in rollback-journal
mode a backup's read lock makes writers wait for it). There is no server process: start and
stop only check the file. Trove's ``databases`` and ``users`` have no meaning for SQLite (one
file, no accounts) and are ignored.

External files must lie inside one of the ``allowed_roots`` entries that serve the
registering project (see :mod:`strongroom.engines.sqlite.paths`); without roots,
registration is refused.

Backups are page images (:mod:`strongroom.engines.sqlite.snapshot` explains how a
consistent snapshot is read from a live database, :mod:`strongroom.engines.sqlite.stream`
the stream format); incrementals carry only pages whose hash changed since the parent.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from strongroom.engines.allowlist import AllowList
from strongroom.engines.base import (
    BackupResult,
    ByteSink,
    Connection,
    EngineInfo,
    InstanceRequest,
    Metadata,
    ParentChain,
    RestoreInput,
)
from strongroom.engines.beneath import directory, open_beneath
from strongroom.engines.deadline import read_by
from strongroom.engines.errors import (
    BackupError,
    IncompatibleBackupError,
    InstanceError,
    InvalidExternalError,
    RestoreError,
)
from strongroom.engines.fsids import FsIdError, as_owner
from strongroom.engines.identity import remove_tree
from strongroom.engines.sqlite import checks
from strongroom.engines.sqlite.files import (
    DatabaseFileError,
    DatabaseFiles,
    FileLocation,
    open_database,
)
from strongroom.engines.sqlite.paths import containing_root, external_path
from strongroom.engines.sqlite.restore import restore_file
from strongroom.engines.sqlite.snapshot import Snapshot, connect
from strongroom.engines.sqlite.stream import (
    DIGEST_SIZE,
    FORMAT,
    FORMAT_VERSION,
    KIND_FULL,
    KIND_INCREMENTAL,
    PAGE_HASH,
    Header,
    LinkInfo,
    StreamFormatError,
    StreamWriter,
    pack_hashes,
    page_digest,
    parse_metadata,
)

DB_FILENAME = "data.db"
SQLITE_MAGIC = b"SQLite format 3\x00"
DEFAULT_BUSY_TIMEOUT = 30.0
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


class SqliteEngine:
    datastore = "sqlite"

    def __init__(
        self,
        *,
        allowed_roots: AllowList | Sequence[Path] = (),
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        if not isinstance(allowed_roots, AllowList):
            allowed_roots = AllowList.of_paths(allowed_roots)
        self._roots = allowed_roots
        self._busy_timeout = busy_timeout

    def detect(self) -> EngineInfo | None:
        extra = {"library_version": sqlite3.sqlite_version}
        return EngineInfo("sqlite", "3", extra=extra)

    # -- managed instances -------------------------------------------------------------
    def check_request(self, request: InstanceRequest) -> None:
        return None  # SQLite has no users or databases of its own

    def create_instance(self, home: Path, request: InstanceRequest) -> Connection:
        path = self._managed_path(home)
        try:
            _private_home(path.parent)
            with directory(path.parent) as home_fd:
                # Created here 0600, so SQLite's -wal and -shm (made with the same mode) are too.
                flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                try:
                    fd = open_beneath(home_fd, DB_FILENAME, flags, PRIVATE_FILE)
                except FileExistsError as exc:
                    raise InstanceError("the instance directory already holds a database") from exc
                try:
                    os.fchmod(fd, PRIVATE_FILE)
                finally:
                    os.close(fd)
            conn = connect(str(path), busy_timeout=self._busy_timeout)
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            finally:
                conn.close()
        except (OSError, sqlite3.Error) as exc:
            raise InstanceError(f"cannot create the SQLite file: {exc}") from exc
        if str(mode).lower() != "wal":
            raise InstanceError("the SQLite file could not be put in WAL mode")
        return self._managed_connection(path)

    def restore_instance(
        self,
        home: Path,
        chain: Sequence[RestoreInput],
        request: InstanceRequest,
        *,
        timeout: float | None = None,
    ) -> Connection:
        # No server to wait on: the time goes to reading the backup.
        deadline = None if timeout is None else time.monotonic() + timeout
        chain = read_by(chain, deadline, RestoreError)
        path = self._managed_path(home)
        try:
            _private_home(path.parent)
        except OSError as exc:
            raise InstanceError(f"cannot create the instance directory: {exc.strerror}") from exc
        for link in chain:
            self.check_restorable(link.metadata)
        restore_file(path.parent, path.name, chain, busy_timeout=self._busy_timeout)
        return self._managed_connection(path)

    def start_instance(self, home: Path, connection: Connection) -> Connection:
        try:
            with self._open(connection):
                pass
        except BackupError as exc:
            raise InstanceError(f"the instance's SQLite file is unusable: {exc}") from exc
        return dict(connection)

    def stop_instance(self, home: Path, connection: Connection) -> None:
        return None

    def destroy_instance(self, home: Path, connection: Connection) -> None:
        try:
            remove_tree(Path(home))  # never through a link left in it
        except OSError as exc:
            raise InstanceError(f"cannot remove the instance directory: {exc.strerror}") from exc

    def check_restored(
        self, home: Path, connection: Connection, *, timeout: float | None = None
    ) -> dict[str, Any]:
        # One local file, read by the service itself: no server can hold it.
        return checks.check_restored(Path(home), Path(str(connection["path"])))

    # -- external instances ------------------------------------------------------------
    def register_external(self, params: Mapping[str, Any], *, project_id: str) -> Connection:
        """Resolve the path within the project's roots, then open it beneath the deepest
        root holding it (no link at any step) and record what the descriptor is."""
        roots = tuple(Path(root) for root in self._roots.for_project(project_id))
        path = external_path(params, roots)
        location = FileLocation(str(containing_root(path, roots)), str(path))
        try:
            with open_database(location, None) as files:
                self._check_usable(files)
                dev, ino = files.identity
        except DatabaseFileError as exc:
            raise InvalidExternalError(f"the path changed while it was checked: {exc}") from exc
        return {"path": location.path, "root": location.root, "dev": dev, "ino": ino}

    def external_identity(self, connection: Connection) -> str:
        return f"sqlite:{connection.get('dev')}:{connection.get('ino')}"

    # -- both ----------------------------------------------------------------------------
    def public_view(self, connection: Connection) -> dict[str, Any]:
        return {"path": connection.get("path")}

    def data_size(self, connection: Connection) -> int | None:
        try:
            files = self._open(connection)
        except BackupError:
            return None
        with files:
            return files.stat.st_size + files.companion_size("-wal")

    def backup(
        self,
        connection: Connection,
        sink: ByteSink,
        *,
        parent: Metadata | None,
        parent_chain: ParentChain | None = None,
    ) -> BackupResult:
        base, base_hashes = _parent_info(parent)
        with (
            self._open(connection) as files,
            Snapshot(files, busy_timeout=self._busy_timeout) as snap,
        ):
            page_size, page_count = snap.page_size, snap.page_count
            if base is not None and base.page_size != page_size:
                raise BackupError(
                    f"the page size changed since the parent backup ({base.page_size} -> "
                    f"{page_size}); a full backup is needed"
                )
            header = Header(
                kind=KIND_FULL if base is None else KIND_INCREMENTAL,
                wal=snap.journal_mode == "wal",
                page_size=page_size,
                page_count=page_count,
                base_page_count=base.page_count if base is not None else 0,
                parent_sha256=base.sha256 if base is not None else bytes(32),
            )
            writer = StreamWriter(sink, header)
            # Grown as pages arrive, never sized up front: the count is the file's own claim.
            hashes = bytearray()
            image = hashlib.sha256()
            pgno = 1
            # hashlib drops the GIL on large inputs: the image digest of a chunk runs on a
            # second core while this thread hashes its pages (the chunk's buffer is reused
            # only after both are done).
            with ThreadPoolExecutor(max_workers=1) as pool:
                for chunk in snap.chunks():
                    if pgno == 1 and bytes(chunk[:16]) != SQLITE_MAGIC:
                        raise BackupError("the file's first page is not a SQLite header")
                    image_done = pool.submit(image.update, chunk)
                    pgno = _pages(chunk, pgno, page_size, hashes, base_hashes, base, writer)
                    image_done.result()
            snap.check_same_file()
            sha256 = image.digest()
            writer.finish(sha256)
            metadata: Metadata = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "kind": "full" if base is None else "incremental",
                "page_size": page_size,
                "page_count": page_count,
                "journal_mode": snap.journal_mode,
                "sqlite_version": sqlite3.sqlite_version,
                "sha256": sha256.hex(),
                "parent_sha256": base.sha256.hex() if base is not None else None,
                "pages_written": writer.records,
                "stream_bytes": writer.bytes_written,
                "page_hash": PAGE_HASH,
                "page_hashes": pack_hashes(hashes),
                "snapshot": snap.stats,
            }
        return BackupResult(metadata=metadata, incremental=base is not None)

    def check_restorable(self, metadata: Metadata) -> None:
        try:
            parse_metadata(metadata)
        except StreamFormatError as exc:
            raise IncompatibleBackupError(f"this engine cannot restore that backup: {exc}") from exc

    # -- internals -----------------------------------------------------------------------
    @staticmethod
    def _managed_path(home: Path) -> Path:
        return Path(os.path.realpath(home)) / DB_FILENAME

    def _check_usable(self, files: DatabaseFiles) -> None:
        """SQLite opens the file (by name, read-only) and reads its schema; then the name
        must still lead to the file looked at, and SQLite must have followed no link."""
        files.check_companions()
        try:
            # By name in a directory a tenant may swap: as the file's owner (see fsids).
            with as_owner(files.stat.st_uid, files.stat.st_gid):
                conn = connect(files.path, busy_timeout=self._busy_timeout, mode="ro")
                try:
                    conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
                    opened = [r[2] for r in conn.execute("PRAGMA database_list") if r[1] == "main"]
                finally:
                    conn.close()
        except (sqlite3.Error, FsIdError) as exc:
            raise InvalidExternalError(f"the file is not a usable SQLite database: {exc}") from exc
        files.check(files.identity)
        if opened != [files.path] or not files.name_leads_here():
            raise DatabaseFileError("the path led elsewhere while it was checked")

    @staticmethod
    def _managed_connection(path: Path) -> Connection:
        with open_database(FileLocation(str(path.parent), str(path)), None) as files:
            dev, ino = files.identity
        return {"path": str(path), "root": str(path.parent), "dev": dev, "ino": ino}

    @staticmethod
    def _open(connection: Connection) -> DatabaseFiles:
        """The connection's file, opened beneath its root and checked (``BackupError``)."""
        dev, ino = connection.get("dev"), connection.get("ino")
        expected = (dev, ino) if isinstance(dev, int) and isinstance(ino, int) else None
        try:
            return open_database(FileLocation.of(connection), expected)
        except DatabaseFileError as exc:
            raise BackupError(str(exc)) from exc


def _private_home(home: Path) -> None:
    """The instance's home exists and is 0700 (the service may have made it 0755)."""
    home.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    with directory(home) as fd:
        os.fchmod(fd, PRIVATE_DIR)


def _pages(
    chunk: memoryview,
    pgno: int,
    page_size: int,
    hashes: bytearray,
    base_hashes: bytes,
    base: LinkInfo | None,
    writer: StreamWriter,
) -> int:
    """Hash each page of ``chunk`` (pages ``pgno``…) and write the changed ones.

    Returns the next page number."""
    for offset in range(0, len(chunk), page_size):
        page = chunk[offset : offset + page_size]
        digest = page_digest(page)
        at = DIGEST_SIZE * (pgno - 1)
        hashes += digest
        if base is None or base_hashes[at : at + DIGEST_SIZE] != digest:
            writer.page(pgno, page)
        pgno += 1
    return pgno


def _parent_info(parent: Metadata | None) -> tuple[LinkInfo | None, bytes]:
    if parent is None:
        return None, b""
    try:
        info = parse_metadata(parent)
        return info, info.hashes()
    except StreamFormatError as exc:
        raise BackupError(f"the parent backup cannot serve as a base: {exc}") from exc
