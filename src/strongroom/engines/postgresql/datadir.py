"""What a file-level backup copies from a live data directory, and which pages changed.

The rules follow ``pg_basebackup`` (src/backend/backup/basebackup.c): the contents of
``pg_wal`` and of the directories the server rebuilds at start are left out (the
directories themselves are kept), as are the server's pid and options files, relation
cache init files, temporary relations and any ``backup_label``/``tablespace_map`` on
disk (the backup writes its own). Tablespaces (links in ``pg_tblspc``) are refused.
The data directory is read by descriptor, never through a link (see :func:`walk`).

A *relation file* is a main-fork segment (``base/<db>/<relfilenode>[.<n>]`` or
``global/<relfilenode>[.<n>]``): every page of it carries the LSN of the last WAL record
that changed it, so an incremental copies only the pages whose LSN is at or after the
parent backup's start (see :func:`changed_runs`). Other forks (free space and visibility
maps, init forks) and all non-relation files are small and copied whole.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from strongroom.engines import beneath

READ_SIZE = 1024 * 1024
RELATION_RE = re.compile(r"^(?:global|base/\d+)/\d+(?:\.\d+)?$")
_TEMP_RELATION_RE = re.compile(r"^t\d+_\d+")
# Directories whose contents the server recreates (kept empty in the backup).
_EMPTY_DIRS = frozenset(
    {
        "pg_wal",
        "pg_dynshmem",
        "pg_notify",
        "pg_replslot",
        "pg_serial",
        "pg_snapshots",
        "pg_stat_tmp",
        "pg_subtrans",
    }
)
_SKIPPED_FILES = frozenset(
    {
        "postmaster.pid",
        "postmaster.opts",
        "backup_label",
        "backup_label.old",
        "tablespace_map",
        "tablespace_map.old",
        "current_logfiles",
    }
)


class DataDirError(Exception):
    """The data directory cannot be backed up this way; the message is safe to show."""


@dataclass(frozen=True)
class Entry:
    path: str  # relative, with "/" separators
    is_dir: bool
    size: int = 0
    # The directory holding it and its name there: valid while the walk is at this entry.
    parent_fd: int = -1
    name: str = ""

    @property
    def is_relation(self) -> bool:
        return not self.is_dir and RELATION_RE.match(self.path) is not None

    @property
    def database(self) -> str | None:
        """The database directory (``base/<oid>``) a file is in, if any."""
        parts = self.path.split("/")
        return "/".join(parts[:2]) if len(parts) >= 3 and parts[0] == "base" else None


def _skipped(rel: str, name: str) -> bool:
    return (
        name in _SKIPPED_FILES
        or name == "pg_internal.init"
        or name.startswith("pgsql_tmp")
        or (rel.startswith("base/") and _TEMP_RELATION_RE.match(name) is not None)
    )


def _changed(rel: str) -> DataDirError:
    return DataDirError(
        f"{rel} was replaced by a link or by something else while the backup ran; "
        "nothing outside the data directory was read"
    )


def walk(root_fd: int) -> Iterator[Entry]:
    """Every directory and file to copy, parents before children, in a stable order.

    The server's OS user can rename anything in its data directory at any moment, so
    the walk holds each directory by descriptor, opens the next one beneath it without
    following links (:func:`beneath.open_beneath`), and requires every directory to be
    the data directory owner's. Links are not followed: ``pg_wal`` may be one (its
    contents are not copied), a tablespace is refused, any other is an error."""
    yield from _walk(root_fd, "", os.fstat(root_fd).st_uid)


def _walk(dir_fd: int, rel_dir: str, owner: int) -> Iterator[Entry]:
    with os.scandir(dir_fd) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    for entry in entries:
        rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
        if _skipped(rel, entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode):
            if rel == "pg_wal":  # initdb --waldir: its contents are not copied anyway
                yield Entry("pg_wal", True)
                yield Entry("pg_wal/archive_status", True)
                continue
            if rel_dir == "pg_tblspc":
                raise DataDirError("tablespaces are not supported")
            raise DataDirError(f"unexpected symbolic link in the data directory: {rel}")
        if stat.S_ISDIR(info.st_mode):
            yield Entry(rel, True)
            if rel_dir == "" and entry.name in _EMPTY_DIRS:
                if entry.name == "pg_wal":
                    yield Entry("pg_wal/archive_status", True)
                continue
            child = _open_dir(dir_fd, entry.name, rel, owner)
            if child is None:
                continue  # removed while the backup runs (e.g. DROP DATABASE)
            try:
                yield from _walk(child, rel, owner)
            finally:
                os.close(child)
        elif stat.S_ISREG(info.st_mode):
            yield Entry(rel, False, info.st_size, dir_fd, entry.name)


def _open_dir(parent_fd: int, name: str, rel: str, owner: int) -> int | None:
    try:
        fd = beneath.open_beneath(parent_fd, name, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
    except (beneath.EscapeError, NotADirectoryError) as exc:
        raise _changed(rel) from exc
    if os.fstat(fd).st_uid != owner:
        os.close(fd)
        raise DataDirError(f"{rel} does not belong to the data directory's owner")
    return fd


def open_file(entry: Entry, owner: int) -> tuple[int, int] | None:
    """``(descriptor, size)`` of a file the walk found, checked on that descriptor: a
    regular file of ``owner`` (a hard link to someone else's file is not), reached
    without a link. ``None`` when it is gone (dropped while the backup runs)."""
    try:
        fd, info = beneath.open_regular(entry.parent_fd, entry.name)
    except FileNotFoundError:
        return None
    except beneath.EscapeError as exc:
        raise _changed(entry.path) from exc
    if info.st_uid != owner:
        os.close(fd)
        raise DataDirError(f"{entry.path} does not belong to the data directory's owner")
    return fd, info.st_size


def open_path(root_fd: int, rel: str) -> tuple[int, int]:
    """A regular file of the data directory's owner at ``rel`` (``global/pg_control``),
    reached beneath ``root_fd`` without a link."""
    try:
        fd, info = beneath.open_regular(root_fd, rel)
    except FileNotFoundError as exc:
        raise DataDirError(f"the data directory has no {rel}") from exc
    except beneath.EscapeError as exc:
        raise _changed(rel) from exc
    if info.st_uid != os.fstat(root_fd).st_uid:
        os.close(fd)
        raise DataDirError(f"{rel} does not belong to the data directory's owner")
    return fd, info.st_size


def system_identifier(root_fd: int) -> str:
    """The system identifier in ``global/pg_control`` (its first 8 bytes)."""
    fd, _size = open_path(root_fd, "global/pg_control")
    try:
        raw = os.pread(fd, 8, 0)
    finally:
        os.close(fd)
    if len(raw) != 8:
        raise DataDirError("global/pg_control is too short")
    return str(int.from_bytes(raw, "little"))


def read_exactly(fd: int, buffer: bytearray, size: int) -> memoryview:
    """Up to ``size`` bytes of ``fd`` into ``buffer``; zeros past the file's end (a
    file the server truncates while it is copied; WAL replay puts it right)."""
    view = memoryview(buffer)[:size]
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            view[got:] = bytes(size - got)
            break
        got += n
    return view


def changed_runs(
    fd: int, size: int, threshold: int, block_size: int
) -> Iterator[tuple[int, memoryview]]:
    """``(first block, pages)`` for each run of pages in the first ``size`` bytes of
    ``fd`` whose LSN is at or after ``threshold``, or zero (a page never written: new
    pages are included so the file's new extent is always covered). Reads ``READ_SIZE``
    at a time; each yielded view is valid until the next one is requested."""
    per_read = max(1, READ_SIZE // block_size)
    page_lsns = struct.Struct("<" + f"II{block_size - 8}x" * per_read)
    buffer = bytearray(per_read * block_size)
    blocks = size // block_size
    first = 0
    while first < blocks:
        count = min(per_read, blocks - first)
        view = read_exactly(fd, buffer, count * block_size)
        if count == per_read:
            words = page_lsns.unpack(view)
        else:
            words = struct.unpack("<" + f"II{block_size - 8}x" * count, view)
        run_start = -1
        for i in range(count + 1):
            changed = False
            if i < count:
                lsn = (words[2 * i] << 32) | words[2 * i + 1]
                changed = lsn >= threshold or lsn == 0
            if changed and run_start < 0:
                run_start = i
            elif not changed and run_start >= 0:
                yield first + run_start, view[run_start * block_size : i * block_size]
                run_start = -1
        first += count
