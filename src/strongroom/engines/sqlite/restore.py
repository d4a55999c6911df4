"""Rebuild a database file from a chain of page streams (full, then incrementals).

The file is built under a temporary name next to the target, checked (image SHA-256
against the last link's metadata, then ``PRAGMA integrity_check``) and only then renamed
into place; on any failure the temporary file and its ``-wal``/``-shm``/``-journal``
companions are removed, so nothing half-restored is left behind. Every name is created,
renamed and removed relative to a descriptor of the instance's directory (``O_EXCL``, no
link followed), and the file is 0600 from its creation.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from strongroom.engines.base import RestoreInput
from strongroom.engines.beneath import open_beneath
from strongroom.engines.errors import RestoreError
from strongroom.engines.sqlite.snapshot import connect
from strongroom.engines.sqlite.stream import (
    KIND_FULL,
    KIND_INCREMENTAL,
    LinkInfo,
    StreamFormatError,
    StreamReader,
    parse_metadata,
)

HASH_CHUNK = 1 << 20
PRIVATE_FILE = 0o600
COMPANIONS = ("-wal", "-shm", "-journal")


def validate_chain(chain: Sequence[RestoreInput]) -> list[LinkInfo]:
    if not chain:
        raise RestoreError("the restore chain is empty")
    links: list[LinkInfo] = []
    for position, link in enumerate(chain):
        try:
            info = parse_metadata(link.metadata)
        except StreamFormatError as exc:
            raise RestoreError(f"link {position}: {exc}") from exc
        if position == 0:
            if info.kind != "full" or info.parent_sha256 is not None:
                raise RestoreError("the restore chain does not start with a full backup")
        else:
            previous = links[-1]
            if info.kind != "incremental":
                raise RestoreError(f"link {position} is not an incremental backup")
            if info.parent_sha256 != previous.sha256:
                raise RestoreError(f"link {position} was not taken on top of link {position - 1}")
            if info.page_size != previous.page_size:
                raise RestoreError(f"link {position} has another page size than its parent")
        links.append(info)
    return links


def restore_file(
    directory: Path, name: str, chain: Sequence[RestoreInput], *, busy_timeout: float
) -> None:
    """Build ``directory/name`` from ``chain``; raise ``RestoreError`` and leave nothing on
    failure."""
    links = validate_chain(chain)
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise RestoreError(f"cannot open the instance directory: {exc.strerror}") from exc
    try:
        _restore_beneath(dir_fd, directory, name, chain, links, busy_timeout)
    finally:
        os.close(dir_fd)


def _restore_beneath(
    dir_fd: int,
    directory: Path,
    name: str,
    chain: Sequence[RestoreInput],
    links: list[LinkInfo],
    busy_timeout: float,
) -> None:
    if _exists(dir_fd, name):
        raise RestoreError("the instance directory already holds a database")
    temp = f".{name}.restore-{secrets.token_hex(6)}"
    try:
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            fd = open_beneath(dir_fd, temp, flags, PRIVATE_FILE)
        except OSError as exc:
            raise RestoreError(f"cannot create the restored database: {exc.strerror}") from exc
        try:
            os.fchmod(fd, PRIVATE_FILE)
            for position, (link, info) in enumerate(zip(chain, links, strict=True)):
                _apply(fd, link, info, position)
            os.fsync(fd)
            if _image_sha256(fd) != links[-1].sha256:
                raise RestoreError("the restored image does not match the backup's checksum")
        finally:
            os.close(fd)
        # SQLite can only open by name: the directory is the service's own (0700).
        _integrity_check(directory / temp, busy_timeout)
        _remove_companions(dir_fd, temp)
        if _exists(dir_fd, name):
            raise RestoreError("the instance directory already holds a database")
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    except BaseException:
        _remove(dir_fd, temp)
        raise


def _apply(fd: int, link: RestoreInput, info: LinkInfo, position: int) -> None:
    try:
        reader = StreamReader(link.stream)
        header = reader.header
        expected_kind = KIND_FULL if position == 0 else KIND_INCREMENTAL
        if (
            header.kind != expected_kind
            or header.page_size != info.page_size
            or header.page_count != info.page_count
            or (position > 0 and header.parent_sha256 != info.parent_sha256)
        ):
            raise RestoreError(f"link {position}: the stream does not match its metadata")
        page_size = header.page_size
        expected_pgno = 1
        while (item := reader.next_page()) is not None:
            pgno, page = item
            if position == 0 and pgno != expected_pgno:
                raise RestoreError(f"link {position}: the full backup misses page {expected_pgno}")
            expected_pgno = pgno + 1
            os.pwrite(fd, page, (pgno - 1) * page_size)
        if position == 0 and expected_pgno != header.page_count + 1:
            raise RestoreError(f"link {position}: the full backup misses pages at its end")
        trailer = reader.finish()
        if trailer.sha256 != info.sha256:
            raise RestoreError(f"link {position}: the stream does not match its metadata")
        os.ftruncate(fd, header.page_count * page_size)
    except StreamFormatError as exc:
        raise RestoreError(f"link {position}: {exc}") from exc
    except OSError as exc:
        raise RestoreError(f"cannot write the restored database: {exc.strerror}") from exc


def _image_sha256(fd: int) -> bytes:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, HASH_CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.digest()


def _integrity_check(path: Path, busy_timeout: float) -> None:
    try:
        conn = connect(str(path), busy_timeout=busy_timeout)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise RestoreError(f"the restored database does not open: {exc}") from exc
    if [tuple(row) for row in rows] != [("ok",)]:
        first = "; ".join(str(row[0]) for row in rows[:3])
        raise RestoreError(f"the restored database fails its integrity check: {first}")


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _remove(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
    _remove_companions(dir_fd, name)


def _remove_companions(dir_fd: int, name: str) -> None:
    for suffix in COMPANIONS:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name + suffix, dir_fd=dir_fd)
