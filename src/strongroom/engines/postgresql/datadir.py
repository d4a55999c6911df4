"""What a file-level backup copies from a live data directory, and which pages changed.

The rules follow ``pg_basebackup`` (src/backend/backup/basebackup.c): the contents of
``pg_wal`` and of the directories the server rebuilds at start are left out (the
directories themselves are kept), as are the server's pid and options files, relation
cache init files, temporary relations and any ``backup_label``/``tablespace_map`` on
disk (the backup writes its own). Tablespaces (links in ``pg_tblspc``) are refused.

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
from pathlib import Path

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


def walk(root: Path) -> Iterator[Entry]:
    """Every directory and file to copy, parents before children, in a stable order."""
    yield from _walk(root, "")


def _walk(root: Path, rel_dir: str) -> Iterator[Entry]:
    try:
        entries = sorted(os.scandir(root / rel_dir if rel_dir else root), key=lambda e: e.name)
    except FileNotFoundError:
        return  # a directory removed while the backup runs (e.g. DROP DATABASE)
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
            if not (rel_dir == "" and entry.name in _EMPTY_DIRS):
                yield from _walk(root, rel)
            elif entry.name == "pg_wal":
                yield Entry("pg_wal/archive_status", True)
        elif stat.S_ISREG(info.st_mode):
            yield Entry(rel, False, info.st_size)


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
