"""The backup methods of the PostgreSQL engine, their names in backup metadata, and the
rules a chain of them follows.

``pgdata-files`` / ``pgdata-pages`` (:mod:`file_method`): the data directory's files, and
the pages changed since the parent. ``pg_basebackup-tar`` / ``wal-range``
(:mod:`replication_method`): ``pg_basebackup`` and the WAL since the parent, for servers
on other hosts. A chain never mixes the two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from strongroom.engines.base import Metadata, RestoreInput
from strongroom.engines.errors import BackupError, IncompatibleBackupError, RestoreError
from strongroom.engines.postgresql.lsn import parse_lsn

REPLICATION_FULL = "pg_basebackup-tar"
REPLICATION_INCREMENTAL = "wal-range"
FILES_FULL = "pgdata-files"
FILES_INCREMENTAL = "pgdata-pages"
FILE_METHODS = (FILES_FULL, FILES_INCREMENTAL)
FULL_METHODS = (REPLICATION_FULL, FILES_FULL)
ALL = (REPLICATION_FULL, REPLICATION_INCREMENTAL, *FILE_METHODS)


def check_restorable(metadata: Metadata, major: str) -> None:
    """Raise ``IncompatibleBackupError`` unless this host (PostgreSQL ``major``) can
    restore a backup with ``metadata``."""
    method = metadata.get("method")
    if method not in ALL:
        raise IncompatibleBackupError(f"unknown PostgreSQL backup method {method!r}")
    theirs = str(metadata.get("server_major", ""))
    if theirs != major:
        raise IncompatibleBackupError(
            f"backup is from PostgreSQL {theirs or 'an unknown version'}, this host runs {major}"
        )


def check_chain(chain: Sequence[RestoreInput], major: str) -> None:
    if not chain:
        raise RestoreError("the restore chain is empty")
    for link in chain:
        check_restorable(link.metadata, major)
    first = chain[0].metadata
    if first["method"] not in FULL_METHODS:
        raise RestoreError("the restore chain does not start with a full backup")
    incremental = FILES_INCREMENTAL if first["method"] == FILES_FULL else REPLICATION_INCREMENTAL
    previous = first
    for link in chain[1:]:
        meta = link.metadata
        if meta["method"] in FULL_METHODS:
            raise RestoreError("a full backup appears after the start of the chain")
        if meta["method"] != incremental:
            raise RestoreError("the chain mixes backup methods")
        if str(meta["system_identifier"]) != str(first["system_identifier"]):
            raise RestoreError("the chain mixes backups of different servers")
        if int(meta["timeline"]) != int(first["timeline"]):
            raise RestoreError("the chain spans a timeline change")
        if incremental == FILES_INCREMENTAL:
            if parse_lsn(meta["threshold_lsn"]) != parse_lsn(previous["start_lsn"]):
                raise RestoreError(
                    f"the chain has a gap: an incremental holds the pages changed since "
                    f"{meta['threshold_lsn']}, its parent started at {previous['start_lsn']}"
                )
        elif parse_lsn(meta["start_lsn"]) != parse_lsn(previous["stop_lsn"]):
            raise RestoreError(
                f"the chain has a gap: an incremental starts at {meta['start_lsn']}, "
                f"its parent ends at {previous['stop_lsn']}"
            )
        previous = meta


def check_parent(parent: Metadata, facts: Mapping[str, Any], sysid: str, timeline: int) -> int:
    if parent.get("method") not in ALL:
        raise BackupError("the parent is not a PostgreSQL backup of this engine")
    if str(parent.get("system_identifier")) != sysid:
        raise BackupError(
            "the parent backup is from another server (system identifier "
            f"{parent.get('system_identifier')}, this server {sysid}); take a full backup"
        )
    if str(parent.get("server_major")) != facts["server_major"]:
        raise BackupError(
            f"the parent backup is from PostgreSQL {parent.get('server_major')}, "
            f"the server now runs {facts['server_major']}; take a full backup"
        )
    if int(parent.get("timeline", -1)) != timeline:
        raise BackupError(
            f"the server's timeline changed since the parent (parent on timeline "
            f"{parent.get('timeline')}, server on {timeline}); take a full backup"
        )
    return parse_lsn(str(parent["stop_lsn"]))


def check_wal_header(header: Mapping[str, Any], meta: Metadata, full: Metadata) -> None:
    if (
        header.get("start") != parse_lsn(meta.get("wal_start_lsn") or meta["start_lsn"])
        or header.get("stop") != parse_lsn(meta["stop_lsn"])
        or header.get("timeline") != int(full["timeline"])
        or header.get("segment_size") != int(full["wal_segment_size"])
    ):
        raise RestoreError("a backup stream's WAL does not match its metadata")
