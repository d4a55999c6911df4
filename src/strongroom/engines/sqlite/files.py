"""The directory of a SQLite file, held by descriptor, and what the file's name leads to.

A tenant who writes inside an allowed directory can swap any directory on the way to its
file for a symbolic link at any moment (to another tenant's instance, say). So the bytes
of a backup never come from a path: the engine opens the directory it trusts (the
allow-list root the file was registered under, or a managed instance's home), walks to the
file's directory beneath it with :func:`strongroom.engines.beneath.open_beneath` (no link
at any step), and the page reader opens the file and its ``-wal``/``-shm`` relative to that
descriptor (``O_NOFOLLOW``), checking the type and ``(st_dev, st_ino)`` on what it opened.

The service process never opens an existing database file itself: closing any descriptor
of it would drop every POSIX lock the process holds on it, SQLite's snapshot lock included.
Here it is only looked at with ``fstatat`` on the held directory.

SQLite itself can only be given a name (it resolves links in it, even ``/proc/self/fd/N``),
and opens ``-journal``, ``-wal`` and ``-shm`` by name too. Its connection only holds the
snapshot's lock; :meth:`DatabaseFiles.check_companions` refuses companions that are links
or have other names before SQLite opens them, :func:`holds_shared_lock` checks that this
process holds a lock on the registered file, and :meth:`DatabaseFiles.name_leads_here` that
the path still leads to it.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import PurePosixPath
from types import TracebackType
from typing import Any

from strongroom.engines.beneath import EscapeError, open_beneath, open_dir

# SQLite's unix VFS takes a SHARED lock as a read lock on these bytes of the database file
# (PENDING_BYTE + 2, 510 bytes), in rollback-journal and WAL mode alike.
SHARED_FIRST = 0x40000000 + 2
PROC_LOCKS = "/proc/locks"
COMPANIONS = ("-journal", "-wal", "-shm")


class DatabaseFileError(ValueError):
    """The registered file cannot be reached safely; the message says why."""


@dataclass(frozen=True)
class FileLocation:
    """``path`` (absolute, resolved) reached from ``root``, a directory the service trusts."""

    root: str
    path: str

    @classmethod
    def of(cls, connection: dict[str, Any]) -> FileLocation:
        """From a connection; one registered before roots were recorded walks from ``/``."""
        path, root = connection.get("path"), connection.get("root", "/")
        for value in (path, root):
            if not isinstance(value, str) or "\x00" in value or not os.path.isabs(value):
                raise DatabaseFileError("the connection has no absolute 'path' and 'root'")
        location = cls(str(root), str(path))
        location.parts()
        return location

    def parts(self) -> tuple[str, str]:
        """``(parent, name)`` relative to the root; ``parent`` is ``""`` for the root itself."""
        pure = PurePosixPath(self.path)
        if pure == PurePosixPath(self.root) or not pure.is_relative_to(self.root):
            raise DatabaseFileError("the file is not inside the directory it was registered under")
        relative = pure.relative_to(self.root)
        if ".." in relative.parts or os.path.normpath(self.path) != self.path:
            raise DatabaseFileError("the file's path is not in canonical form")
        parent = str(relative.parent)
        return ("" if parent == "." else parent), relative.name


class DatabaseFiles:
    """The database's directory, held open, and the file's status (a context manager)."""

    def __init__(self, location: FileLocation, parent_fd: int, st: os.stat_result) -> None:
        self.location = location
        self.parent_fd = parent_fd
        self.stat = st

    @property
    def path(self) -> str:
        return self.location.path

    @property
    def name(self) -> str:
        return self.location.parts()[1]

    @property
    def identity(self) -> tuple[int, int]:
        return self.stat.st_dev, self.stat.st_ino

    def companion_size(self, suffix: str) -> int:
        """The size of ``<name><suffix>`` beside the file (0 if it is not a regular file)."""
        try:
            st = os.stat(self.name + suffix, dir_fd=self.parent_fd, follow_symlinks=False)
        except OSError:
            return 0
        return st.st_size if stat.S_ISREG(st.st_mode) else 0

    def check(self, expected: tuple[int, int] | None) -> None:
        """The name, in the held directory, still names a regular file (the registered
        one, with ``expected``)."""
        current = _stat_beneath(self.parent_fd, self.name)
        if stat.S_ISLNK(current.st_mode):
            raise DatabaseFileError("a symbolic link now stands in place of the registered file")
        if not stat.S_ISREG(current.st_mode):
            raise DatabaseFileError("the registered file is no longer a regular file")
        if expected is not None and (current.st_dev, current.st_ino) != tuple(expected):
            raise DatabaseFileError("the registered file was replaced by another file")

    def check_companions(self) -> None:
        """SQLite's ``-journal``, ``-wal`` and ``-shm`` beside the file are absent, or regular
        files with no other name: SQLite opens them by name and would follow a link."""
        for suffix in COMPANIONS:
            try:
                st = os.stat(self.name + suffix, dir_fd=self.parent_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise DatabaseFileError(_reason(exc, f"the database's {suffix} file")) from exc
            if not stat.S_ISREG(st.st_mode):
                raise DatabaseFileError(f"the database's {suffix} file is not a regular file")
            if st.st_nlink != 1:
                raise DatabaseFileError(f"the database's {suffix} file has other names (links)")

    def name_leads_here(self) -> bool:
        """Whether the path (as SQLite follows it) still leads to the file looked at."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.identity

    def close(self) -> None:
        os.close(self.parent_fd)

    def __enter__(self) -> DatabaseFiles:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_database(location: FileLocation, expected: tuple[int, int] | None) -> DatabaseFiles:
    """Open the file's directory beneath its root and look at the file there: a regular
    file, and with ``expected`` the same ``(st_dev, st_ino)``."""
    parent, name = location.parts()
    try:
        root_fd = open_dir(location.root)
    except OSError as exc:
        raise DatabaseFileError(_reason(exc, "the directory the file is registered under")) from exc
    try:
        if parent:
            parent_fd = open_beneath(root_fd, parent, os.O_RDONLY | os.O_DIRECTORY)
        else:
            parent_fd = os.dup(root_fd)
    except OSError as exc:
        raise DatabaseFileError(_reason(exc, "the registered file's directory")) from exc
    finally:
        os.close(root_fd)
    files = DatabaseFiles(location, parent_fd, _stat_beneath(parent_fd, name))
    try:
        files.check(expected)
    except BaseException:
        files.close()
        raise
    return files


def holds_shared_lock(identity: tuple[int, int]) -> bool | None:
    """Whether this process holds a SQLite SHARED lock on the file ``(st_dev, st_ino)``.

    POSIX locks belong to the process and the inode, whatever name reached it, so this
    tells whether the snapshot's connection locked the registered file and not another
    one a swapped link led it to. ``None`` where the kernel does not list locks.

    Only the inode number is compared: the kernel lists the superblock's device, which is
    not what ``stat`` reports on btrfs subvolumes."""
    _dev, ino = identity
    pid = str(os.getpid())
    try:
        with open(PROC_LOCKS, encoding="ascii", errors="replace") as locks:
            lines = locks.readlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if "->" in fields[:2]:  # a waiter, listed under the lock it waits for
            continue
        # "1: POSIX  ADVISORY  READ 1234 fe:00:5678 1073741826 1073742335"
        if len(fields) < 8 or fields[1] != "POSIX" or fields[4] != pid:
            continue
        if fields[5].rsplit(":", 1)[-1] != str(ino):
            continue
        start, end = int(fields[6]), fields[7]
        if start <= SHARED_FIRST and (end == "EOF" or int(end) >= SHARED_FIRST):
            return True
    return False


def _stat_beneath(dir_fd: int, name: str) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        raise DatabaseFileError(_reason(exc, "the registered file")) from exc


def _reason(exc: OSError, what: str) -> str:
    if isinstance(exc, EscapeError):
        if exc.errno == errno.EINVAL:
            return f"{what} is no longer a regular file"
        return f"a symbolic link now stands on the path to {what}"
    if exc.errno == errno.ENOENT:
        return f"{what} is missing"
    if exc.errno == errno.ENOTDIR:
        return f"the path to {what} no longer goes through directories only"
    return f"cannot open {what}: {exc.strerror or exc}"
