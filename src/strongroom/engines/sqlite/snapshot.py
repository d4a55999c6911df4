"""A consistent page-level snapshot of a live SQLite file, read while writers keep writing.

Approach
--------
The snapshot is a read transaction held through the standard ``sqlite3`` module; the raw
pages are read by a helper process (:mod:`strongroom.engines.sqlite.pagereader`) that
holds no lock and never writes.

*Rollback-journal mode.* The read transaction holds SQLite's SHARED lock, so no writer can
write the main file until it ends: the file's first ``page_count`` pages *are* the snapshot.
Writers wait (their ``busy_timeout``) for the backup to finish; that is how SQLite's
rollback journal works for any reader, not a choice of ours.

*WAL mode.* Writers are blocked only for an instant. A second connection takes the WAL
write lock (``BEGIN IMMEDIATE``); with no commit possible, the snapshot connection starts
its read transaction, and the helper reads the wal-index header from ``-shm``, which is then
exactly that reader's snapshot (``mxFrame``, page count, salts, ``nBackfill``). The write
lock is released and writers continue. A page of the snapshot is its newest WAL frame
``<= mxFrame``, else the main file's copy. This stays true while writers append and
checkpoints run, because SQLite itself keeps it true for our reader:

- a checkpoint never copies a frame newer than any reader's read-mark into the main file,
  so main-file pages we take (those without a frame ``<= mxFrame``) are not rewritten;
- a WAL restart (frames overwritten from the start) needs every read-mark above 0 free,
  so it cannot happen while our reader uses the WAL; if our reader uses read-mark 0 (every
  frame was already in the main file), a restart can happen but then the main file holds
  the snapshot and no checkpoint may write it until we finish. The helper recognises a
  restart by the changed salt and then reads those pages from the main file; it refuses
  if the header said frames were still missing from the main file.

*Which file.* SQLite opens the database (and its ``-wal``/``-shm``) by name, and a tenant
may swap a directory on the way for a link. Nothing SQLite reads goes into the backup: the
helper reads only descriptors the engine opened beneath the registered directory and checked
(:mod:`strongroom.engines.sqlite.files`). SQLite's connection only holds the lock, and gives
the page size and count, which must agree with what the registered file's own header and
wal-index say. Once the snapshot is held, the name SQLite resolved must be the registered
path, this process must hold a SHARED lock on the registered file's inode, and the name must
still lead to it; otherwise the backup fails rather than read an unlocked file. Before SQLite
opens anything and again at the end, its ``-journal``, ``-wal`` and ``-shm`` must be absent or
plain regular files with one name: SQLite would follow a link planted there (and, as root,
roll back or checkpoint through it). And the connections are opened, used and closed with
this thread's filesystem ids the file owner's (:mod:`strongroom.engines.fsids`): a directory
swapped for a link between those checks lets SQLite do no more than that owner could. Only
the writer, which holds the WAL write lock for an instant, can write; it is closed before
the read-only reader, so that SQLite's checkpoint on the last close never runs in this
process.

Alternatives rejected: ``sqlite_dbpage`` (not compiled into this Python's SQLite 3.40.1,
nor into the ``apsw`` wheels on PyPI); loading a second SQLite library into the process
(two libraries in one process do not see each other's POSIX locks, and a writer in the
service process could then commit under our snapshot); the online backup API (it needs a
destination database, i.e. a temporary copy, and rewrites page 1).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from strongroom.engines.errors import BackupError
from strongroom.engines.fsids import FsIdError, as_owner, as_service
from strongroom.engines.sqlite.files import DatabaseFileError, DatabaseFiles, holds_shared_lock

READER_SCRIPT = Path(__file__).with_name("pagereader.py")
CHUNK_BYTES = 1 << 20
STDERR_LIMIT = 4000
MODE_RETRIES = 3
NOT_THE_REGISTERED_FILE = (
    "the database SQLite opened is not the registered file (its path changed during the backup)"
)


def sqlite_uri(path: str, mode: str) -> str:
    return f"file:{quote(path)}?mode={mode}"


def connect(path: str, *, busy_timeout: float, mode: str = "rw") -> sqlite3.Connection:
    return sqlite3.connect(
        sqlite_uri(path, mode), uri=True, timeout=busy_timeout, isolation_level=None
    )


class Snapshot:
    """Hold a read transaction on ``files`` and stream its pages (a context manager).

    >>> with open_database(location, identity) as files, Snapshot(files, busy_timeout=30) as snap:
    ...     for chunk in snap.chunks(): ...   # whole pages, in order, <= 1 MiB each
    """

    def __init__(self, files: DatabaseFiles, *, busy_timeout: float) -> None:
        self.files = files
        self.path = files.path
        self.busy_timeout = busy_timeout
        self.page_size = 0
        self.page_count = 0
        self.journal_mode = ""
        self.stats: dict[str, Any] = {}
        self._reader: sqlite3.Connection | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- acquisition -------------------------------------------------------------------
    def __enter__(self) -> Snapshot:
        # SQLite works by name in a directory a tenant may swap: as the file's owner.
        try:
            with self._as_owner():
                for _ in range(MODE_RETRIES):
                    if self._acquire():
                        self._check_same_file()
                        return self
            raise BackupError("the database kept switching journal mode; try again")
        except (sqlite3.Error, FsIdError) as exc:
            self._release_as_owner()
            raise BackupError(f"cannot open a read transaction on the database: {exc}") from exc
        except BaseException:
            self._release_as_owner()
            raise

    def _as_owner(self) -> contextlib.AbstractContextManager[None]:
        return as_owner(self.files.stat.st_uid, self.files.stat.st_gid)

    def _acquire(self) -> bool:
        """Start the snapshot; ``False`` when the journal mode changed meanwhile.

        The writer connection is always closed before the (read-only) reader: the last
        connection to close a WAL database checkpoints it, and only a read-only one cannot."""
        self._check_companions()
        writer = connect(self.path, busy_timeout=self.busy_timeout)
        try:
            writer.execute("SELECT count(*) FROM sqlite_schema").fetchone()
            wal = _journal_mode(writer) == "wal"
            self._proc = self._spawn()
            if wal:
                writer.execute("BEGIN IMMEDIATE")
            else:
                writer.close()
            self._begin_read()
            if (self.journal_mode == "wal") != wal:
                writer.close()
                self._release()
                return False
            reply = self._handshake(wal)
            if wal:
                writer.execute("ROLLBACK")
            writer.close()
            self._check_reply(reply, wal)
        except BaseException:
            writer.close()
            self._release()
            raise
        self._send(b"go\n")
        return True

    def _check_companions(self) -> None:
        try:
            self.files.check_companions()
        except DatabaseFileError as exc:
            raise BackupError(str(exc)) from exc

    def _begin_read(self) -> None:
        reader = connect(self.path, busy_timeout=self.busy_timeout, mode="ro")
        self._reader = reader
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        self.journal_mode = _journal_mode(reader)
        self.page_size = int(reader.execute("PRAGMA page_size").fetchone()[0])
        self.page_count = int(reader.execute("PRAGMA page_count").fetchone()[0])

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start the page reader with the database's directory (never the file itself)."""
        try:
            with as_service():  # the service's program, which the file's owner may not reach
                return subprocess.Popen(
                    [sys.executable, "-I", "-S", str(READER_SCRIPT)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    bufsize=0,
                    close_fds=True,
                    pass_fds=[self.files.parent_fd],
                )
        except OSError as exc:
            raise BackupError(f"cannot start the page reader: {exc.strerror}") from exc

    def _handshake(self, wal: bool) -> dict[str, Any]:
        dev, ino = self.files.identity
        request = {
            "dir_fd": self.files.parent_fd,
            "name": self.files.name,
            "dev": dev,
            "ino": ino,
            "wal": wal,
            "page_size": self.page_size,
            "page_count": self.page_count,
        }
        self._send(json.dumps(request).encode() + b"\n")
        return self._read_json()

    def _check_reply(self, reply: dict[str, Any], wal: bool) -> None:
        """What SQLite's connection saw must be what the registered file says of itself."""
        if wal and reply.get("mx_frame"):
            if reply.get("page_size") != self.page_size:
                raise BackupError("the WAL index disagrees with the database's page size")
            if reply.get("n_page") != self.page_count:
                raise BackupError("the WAL index disagrees with the snapshot's page count")
            return
        # The snapshot is the main file alone: its header must agree.
        size, header_pages = reply.get("db_bytes"), reply.get("db_header_pages")
        if not isinstance(size, int) or not isinstance(header_pages, int):
            raise BackupError("the page reader answered nonsense")
        if size == 0 and self.page_count == 0:
            return
        pages = header_pages or size // max(self.page_size, 1)
        if reply.get("db_page_size") != self.page_size or pages != self.page_count:
            raise BackupError(NOT_THE_REGISTERED_FILE)

    def check_same_file(self) -> None:
        """Fail unless SQLite's snapshot lock is on the registered file and its name still
        leads there (a link swapped in on the way would have led SQLite elsewhere)."""
        try:
            with self._as_owner():
                self._check_same_file()
        except FsIdError as exc:
            raise BackupError(f"cannot check the database: {exc}") from exc

    def _check_same_file(self) -> None:
        reader = self._reader
        if reader is None:
            raise BackupError("the snapshot is not open")
        opened = [row[2] for row in reader.execute("PRAGMA database_list") if row[1] == "main"]
        if opened != [self.path] or holds_shared_lock(self.files.identity) is False:
            raise BackupError(NOT_THE_REGISTERED_FILE)
        if not self.files.name_leads_here():
            raise BackupError("the path to the registered file changed during the backup")
        self._check_companions()

    # -- streaming ---------------------------------------------------------------------
    def chunks(self) -> Iterator[memoryview]:
        """Pages 1..page_count in order, as views of whole pages (valid until the next)."""
        proc = self._require_proc()
        assert proc.stdout is not None
        pages_per_chunk = max(1, CHUNK_BYTES // self.page_size) if self.page_size else 1
        buffer = bytearray(pages_per_chunk * max(self.page_size, 1))
        remaining = self.page_count
        while remaining:
            count = min(remaining, pages_per_chunk)
            view = memoryview(buffer)[: count * self.page_size]
            self._fill(view)
            yield view
            remaining -= count
        self.stats = self._read_json()
        if proc.wait() != 0:
            raise BackupError(f"the page reader failed: {self._stderr()}")

    def _fill(self, view: memoryview) -> None:
        proc = self._require_proc()
        assert proc.stdout is not None
        filled = 0
        while filled < len(view):
            got = proc.stdout.readinto(view[filled:])  # type: ignore[attr-defined]
            if not got:
                raise BackupError(f"the page reader stopped early: {self._stderr()}")
            filled += got

    def _read_json(self) -> dict[str, Any]:
        proc = self._require_proc()
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.endswith(b"\n"):
            raise BackupError(f"the page reader failed: {self._stderr()}")
        value = json.loads(line)
        if not isinstance(value, dict):
            raise BackupError("the page reader answered nonsense")
        return value

    def _send(self, data: bytes) -> None:
        proc = self._require_proc()
        assert proc.stdin is not None
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
        except BrokenPipeError as exc:
            raise BackupError(f"the page reader failed: {self._stderr()}") from exc

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise BackupError("the snapshot is not open")
        return self._proc

    def _stderr(self) -> str:
        proc = self._proc
        if proc is None or proc.stderr is None:
            return "no detail"
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        text = proc.stderr.read(STDERR_LIMIT).decode("utf-8", "replace").strip()
        return text or f"exit status {proc.returncode}"

    # -- release -----------------------------------------------------------------------
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release_as_owner()

    def _release_as_owner(self) -> None:
        """Release as the file's owner, or as the service if that cannot be (nothing may be
        left holding the file's lock)."""
        try:
            with self._as_owner():
                self._release()
        except FsIdError:
            self._release()

    def _release(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(sqlite3.Error):
                reader.execute("ROLLBACK")
            reader.close()


def _journal_mode(conn: sqlite3.Connection) -> str:
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
