"""Rebuild a backup's database files into a target that holds nothing yet: a SQLite file,
a PostgreSQL data directory that recovers and promotes on its first start, or a prepared
MariaDB data directory. The chain is verified before the target is touched; the files
are built in a staging directory beside the target and moved into place only when every
chunk has been read and checked, so a refused restore leaves the target as it was."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from strongroom.engines.errors import RestoreError
from strongroom.engines.identity import InstanceIdentity
from strongroom.offline.chain import Link, restore_inputs
from strongroom.storage.base import StorageBackend

SQLITE_NAME = "database.sqlite"
SQLITE_BUSY_TIMEOUT = 5.0
TOOL_TIMEOUT = 3600.0


class TargetError(Exception):
    """A target the restore will not write into; the message says why."""


@dataclass(frozen=True)
class Restored:
    path: Path  # the file or directory written
    datastore: str
    version: str  # the server version the files need (SQLite: "3")


def trusted_place(target: Path) -> None:
    """Root writes the target and its staging directory by name, and gives them away: a
    directory above it that someone else can change (the home of a tenant's instance)
    would let that user swap names meanwhile and lead root's writes elsewhere. So every
    directory above it must be root's and writable by nobody else; sticky ones (as /tmp)
    only further up, since in one others may still make names beside the target (a
    journal SQLite would roll into the file it checks).
    Not root: everything runs as the caller, who can do no more than it could already."""
    if os.geteuid() != 0:
        return
    if not target.parent.is_dir():
        raise TargetError(f"{target.parent} is not a directory")
    literal = [Path(*target.parts[:n]) for n in range(1, len(target.parts))]
    real = Path(os.path.realpath(target.parent))
    for place in (*literal, real, *real.parents):
        st = os.lstat(place) if place in literal else os.stat(place)
        writable = stat.S_ISDIR(st.st_mode) and bool(st.st_mode & 0o022)
        is_parent = place in (target.parent, real)
        if st.st_uid != 0 or (writable and (is_parent or not st.st_mode & stat.S_ISVTX)):
            raise TargetError(
                f"{place} is not root's alone: restore into a directory only root can "
                "change, then move the result where it belongs"
            )


def sqlite_target(target: Path) -> Path:
    """The file to create: ``target``, or ``target/database.sqlite`` for an existing empty
    directory. Refused when it exists."""
    if target.is_dir() and not target.is_symlink():
        trusted_place(target / SQLITE_NAME)
        if any(target.iterdir()):
            raise TargetError(f"{target} is not empty")
        return target / SQLITE_NAME
    trusted_place(target)
    if os.path.lexists(target):
        raise TargetError(f"{target} already exists")
    if not target.parent.is_dir():
        raise TargetError(f"{target.parent} is not a directory")
    return target


def directory_target(target: Path) -> None:
    """A data directory target must not exist yet, or be an empty directory."""
    trusted_place(target)
    if target.is_symlink():
        raise TargetError(f"{target} is a symbolic link")
    if target.exists():
        if not target.is_dir():
            raise TargetError(f"{target} exists and is not a directory")
        if any(target.iterdir()):
            raise TargetError(f"{target} is not empty")
    elif not target.parent.is_dir():
        raise TargetError(f"{target.parent} is not a directory")


def restore(
    store: StorageBackend,
    links: list[Link],
    target: Path,
    *,
    advance: Callable[[int], None],
    owner: InstanceIdentity | None = None,
) -> Restored:
    """Write ``links`` (verified, full first) into ``target``. Raises ``TargetError``
    before anything is written, ``RestoreError`` or a pipeline ``FormatError`` after."""
    datastore = links[-1].opened.manifest.datastore or ""
    target = Path(os.path.abspath(target))
    if datastore == "sqlite":
        from strongroom.engines.sqlite.restore import restore_file

        path = sqlite_target(target)
        restore_file(
            path.parent,
            path.name,
            restore_inputs(store, links, advance),
            busy_timeout=SQLITE_BUSY_TIMEOUT,
        )
        if owner is not None and owner.owner is not None:
            os.chown(path, *owner.owner, follow_symlinks=False)
        return Restored(path, datastore, "3")
    if datastore not in ("postgresql", "mariadb"):
        raise TargetError(f"backups of datastore {datastore!r} cannot be restored offline")
    directory_target(target)
    staging = target.parent / f".{target.name}.strongroom-restore-{secrets.token_hex(6)}"
    staging.mkdir(mode=0o700)
    try:
        chain = restore_inputs(store, links, advance)
        if datastore == "postgresql":
            from strongroom.engines.postgresql.offline import restore_data_dir

            version = restore_data_dir(staging, chain, timeout=TOOL_TIMEOUT)
        else:
            from strongroom.engines.mariadb.offline import prepare_data_dir

            version = prepare_data_dir(staging, chain, timeout=TOOL_TIMEOUT)
        data = staging / "data"
        if owner is not None and owner.owner is not None:
            give_tree(data, owner.owner)
        install(data, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Restored(target, datastore, version)


def install(data: Path, target: Path) -> None:
    """Move the finished directory to ``target`` (absent, or an empty directory)."""
    if target.exists():
        try:
            target.rmdir()
        except OSError as exc:
            raise RestoreError(f"{target} is no longer empty: {exc.strerror}") from None
    os.rename(data, target)


def give_tree(root: Path, owner: tuple[int, int]) -> None:
    """Give everything under ``root`` (written by this process) to ``owner``; no link
    is followed."""
    os.chown(root, *owner, follow_symlinks=False)
    for _dirpath, dirnames, filenames, dir_fd in os.fwalk(root, follow_symlinks=False):
        for name in (*dirnames, *filenames):
            os.chown(name, *owner, dir_fd=dir_fd, follow_symlinks=False)
