"""Rebuild a database file from a chain of page streams (full, then incrementals).

The file is built under a temporary name next to the target, checked (image SHA-256
against the last link's metadata, then ``PRAGMA integrity_check``) and only then renamed
into place; on any failure the temporary file and its ``-wal``/``-shm``/``-journal``
companions are removed, so nothing half-restored is left behind.
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


def restore_file(target: Path, chain: Sequence[RestoreInput], *, busy_timeout: float) -> None:
    """Build ``target`` from ``chain``; raise ``RestoreError`` and leave nothing on failure."""
    links = validate_chain(chain)
    if target.exists():
        raise RestoreError("the instance directory already holds a database")
    temp = target.with_name(f".{target.name}.restore-{secrets.token_hex(6)}")
    try:
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            for position, (link, info) in enumerate(zip(chain, links, strict=True)):
                _apply(fd, link, info, position)
            os.fsync(fd)
            if _image_sha256(fd) != links[-1].sha256:
                raise RestoreError("the restored image does not match the backup's checksum")
        finally:
            os.close(fd)
        _integrity_check(temp, busy_timeout)
        _remove_companions(temp)
        os.replace(temp, target)
        _fsync_dir(target.parent)
    except BaseException:
        _remove(temp)
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


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    _remove_companions(path)


def _remove_companions(path: Path) -> None:
    for suffix in COMPANIONS:
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
