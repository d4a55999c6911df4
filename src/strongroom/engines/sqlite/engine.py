"""``SqliteEngine``: SQLite files as instances, backed up as consistent page images.

Connections are ``{"path": "/absolute/resolved/file.db"}``.

Managed instances are one file, ``<home>/data.db``, created in WAL mode: readers never
block the writer, so a backup does not stall the application either (in rollback-journal
mode a backup's read lock makes writers wait for it). There is no server process: start and
stop only check the file. Trove's ``databases`` and ``users`` have no meaning for SQLite (one
file, no accounts) and are ignored.

External files must lie inside one of the operator's ``allowed_roots`` (see
:mod:`strongroom.engines.sqlite.paths`); without roots, registration is refused.

Backups are page images (:mod:`strongroom.engines.sqlite.snapshot` explains how a
consistent snapshot is read from a live database, :mod:`strongroom.engines.sqlite.stream`
the stream format); incrementals carry only pages whose hash changed since the parent.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
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
    RestoreInput,
)
from strongroom.engines.errors import (
    BackupError,
    IncompatibleBackupError,
    InstanceError,
    InvalidExternalError,
)
from strongroom.engines.sqlite.paths import (
    external_path,
    unchanged_path,
)
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
        return EngineInfo("sqlite", "3", supports_incremental=True, extra=extra)

    # -- managed instances -------------------------------------------------------------
    def check_request(self, request: InstanceRequest) -> None:
        return None  # SQLite has no users or databases of its own

    def create_instance(self, home: Path, request: InstanceRequest) -> Connection:
        path = self._managed_path(home)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                raise InstanceError("the instance directory already holds a database")
            conn = connect(str(path), busy_timeout=self._busy_timeout, mode="rwc")
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            finally:
                conn.close()
        except (OSError, sqlite3.Error) as exc:
            raise InstanceError(f"cannot create the SQLite file: {exc}") from exc
        if str(mode).lower() != "wal":
            raise InstanceError("the SQLite file could not be put in WAL mode")
        return {"path": str(path)}

    def restore_instance(
        self, home: Path, chain: Sequence[RestoreInput], request: InstanceRequest
    ) -> Connection:
        path = self._managed_path(home)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InstanceError(f"cannot create the instance directory: {exc.strerror}") from exc
        for link in chain:
            self.check_restorable(link.metadata)
        restore_file(path, chain, busy_timeout=self._busy_timeout)
        return {"path": str(path)}

    def start_instance(self, home: Path, connection: Connection) -> Connection:
        path = connection.get("path")
        if not isinstance(path, str) or not os.path.isfile(path):
            raise InstanceError("the instance's SQLite file is missing")
        return {"path": path}

    def stop_instance(self, home: Path, connection: Connection) -> None:
        return None

    def destroy_instance(self, home: Path, connection: Connection) -> None:
        try:
            shutil.rmtree(home)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise InstanceError(f"cannot remove the instance directory: {exc.strerror}") from exc

    # -- external instances ------------------------------------------------------------
    def register_external(self, params: Mapping[str, Any], *, project_id: str) -> Connection:
        roots = tuple(Path(root) for root in self._roots.for_project(project_id))
        path = external_path(params, roots)
        info = path.stat()
        try:
            conn = connect(str(path), busy_timeout=self._busy_timeout)
            try:
                conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise InvalidExternalError(f"the file is not a usable SQLite database: {exc}") from exc
        return {"path": str(path), "dev": info.st_dev, "ino": info.st_ino}

    def external_identity(self, connection: Connection) -> str:
        return f"sqlite:{connection.get('dev')}:{connection.get('ino')}"

    # -- both ----------------------------------------------------------------------------
    def public_view(self, connection: Connection) -> dict[str, Any]:
        return {"path": connection.get("path")}

    def data_size(self, connection: Connection) -> int | None:
        path = connection.get("path")
        if not isinstance(path, str):
            return None
        try:
            size = os.stat(path).st_size
        except OSError:
            return None
        with contextlib.suppress(OSError):
            size += os.stat(path + "-wal").st_size
        return size

    def backup(
        self, connection: Connection, sink: ByteSink, *, parent: Metadata | None
    ) -> BackupResult:
        try:
            path = unchanged_path(connection)
        except ValueError as exc:
            raise BackupError(str(exc)) from exc
        base, base_hashes = _parent_info(parent)
        with Snapshot(path, busy_timeout=self._busy_timeout) as snap:
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
            hashes = bytearray(DIGEST_SIZE * page_count)
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
        hashes[at : at + DIGEST_SIZE] = digest
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
