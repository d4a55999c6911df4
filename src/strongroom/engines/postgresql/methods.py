"""The backup methods of the PostgreSQL engine, their names in backup metadata, and the
rules a chain of them follows.

``pgdata-files`` / ``pgdata-pages`` (:mod:`file_method`): the data directory's files, and
the pages changed since the parent. ``pg_basebackup-tar`` / ``wal-range``
(:mod:`replication_method`): ``pg_basebackup`` and the WAL since the parent, for servers
on other hosts. A chain never mixes the two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from strongroom.engines.base import ByteSource, Metadata, RestoreInput
from strongroom.engines.errors import (
    BackupError,
    IncompatibleBackupError,
    RestoreError,
    validation_reason,
)
from strongroom.engines.postgresql import models
from strongroom.engines.postgresql.lsn import parse_lsn

REPLICATION_FULL = "pg_basebackup-tar"
REPLICATION_INCREMENTAL = "wal-range"
FILES_FULL = "pgdata-files"
FILES_INCREMENTAL = "pgdata-pages"
FILE_METHODS = (FILES_FULL, FILES_INCREMENTAL)
FULL_METHODS = (REPLICATION_FULL, FILES_FULL)
ALL = (REPLICATION_FULL, REPLICATION_INCREMENTAL, *FILE_METHODS)

PgMetadata = models.FilesMetadata | models.ReplicationMetadata
# A file-level incremental's ``page_format``: absent, changed blocks stored whole;
# "xor-deltas", blocks may be deltas against the parent chain (stream format 2);
# "realigned-deltas", realigned deltas too (stream format 3, what is written now).
PAGE_DELTAS = "xor-deltas"
PAGE_REALIGNED = "realigned-deltas"
PAGE_FORMATS = (None, PAGE_DELTAS, PAGE_REALIGNED)


def parse(metadata: Metadata) -> PgMetadata:
    """The typed metadata of a PostgreSQL backup (``IncompatibleBackupError`` if it is
    not one this engine wrote)."""
    method = metadata.get("method") if isinstance(metadata, dict) else None
    if method not in ALL:
        raise IncompatibleBackupError(f"unknown PostgreSQL backup method {method!r}")
    try:
        return models.METADATA.validate_python(metadata)
    except ValidationError as exc:
        raise IncompatibleBackupError(
            f"the PostgreSQL backup metadata is malformed: {validation_reason(exc)}"
        ) from None


def check_restorable(metadata: Metadata, major: str) -> PgMetadata:
    """The typed metadata, if this host (PostgreSQL ``major``) can restore a backup with
    ``metadata``; ``IncompatibleBackupError`` if not."""
    parsed = parse(metadata)
    if isinstance(parsed, models.FilesMetadata) and parsed.page_format not in PAGE_FORMATS:
        raise IncompatibleBackupError(
            f"the backup stores pages as {parsed.page_format!r}, which this release does not read"
        )
    if parsed.server_major != major:
        raise IncompatibleBackupError(
            f"backup is from PostgreSQL {parsed.server_major or 'an unknown version'}, "
            f"this host runs {major}"
        )
    return parsed


@dataclass(frozen=True)
class Link:
    """A restore chain's link with its metadata typed."""

    meta: PgMetadata
    stream: ByteSource


def check_chain(chain: Sequence[RestoreInput], major: str) -> list[Link]:
    """The chain's links, typed, once they are one restorable sequence."""
    if not chain:
        raise RestoreError("the restore chain is empty")
    links = [Link(check_restorable(link.metadata, major), link.stream) for link in chain]
    first = links[0].meta
    if first.method not in FULL_METHODS:
        raise RestoreError("the restore chain does not start with a full backup")
    incremental = FILES_INCREMENTAL if first.method == FILES_FULL else REPLICATION_INCREMENTAL
    previous = first
    for meta in (link.meta for link in links[1:]):
        if meta.method in FULL_METHODS:
            raise RestoreError("a full backup appears after the start of the chain")
        if meta.method != incremental:
            raise RestoreError("the chain mixes backup methods")
        if meta.system_identifier != first.system_identifier:
            raise RestoreError("the chain mixes backups of different servers")
        if meta.timeline != first.timeline:
            raise RestoreError("the chain spans a timeline change")
        if isinstance(meta, models.FilesMetadata):
            if meta.threshold_lsn is None or parse_lsn(meta.threshold_lsn) != parse_lsn(
                previous.start_lsn
            ):
                raise RestoreError(
                    f"the chain has a gap: an incremental holds the pages changed since "
                    f"{meta.threshold_lsn}, its parent started at {previous.start_lsn}"
                )
        elif parse_lsn(meta.start_lsn) != parse_lsn(previous.stop_lsn):
            raise RestoreError(
                f"the chain has a gap: an incremental starts at {meta.start_lsn}, "
                f"its parent ends at {previous.stop_lsn}"
            )
        previous = meta
    return links


def parse_parent(parent: Metadata) -> PgMetadata:
    try:
        return parse(parent)
    except IncompatibleBackupError:
        raise BackupError("the parent is not a PostgreSQL backup of this engine") from None


def check_parent(parent: PgMetadata, facts: Mapping[str, Any], sysid: str, timeline: int) -> int:
    if parent.system_identifier != sysid:
        raise BackupError(
            "the parent backup is from another server (system identifier "
            f"{parent.system_identifier}, this server {sysid}); take a full backup"
        )
    if parent.server_major != facts["server_major"]:
        raise BackupError(
            f"the parent backup is from PostgreSQL {parent.server_major}, "
            f"the server now runs {facts['server_major']}; take a full backup"
        )
    if parent.timeline != timeline:
        raise BackupError(
            f"the server's timeline changed since the parent (parent on timeline "
            f"{parent.timeline}, server on {timeline}); take a full backup"
        )
    return parse_lsn(parent.stop_lsn)


def check_wal_header(header: Mapping[str, Any], meta: PgMetadata, full: PgMetadata) -> None:
    wal_start = meta.wal_start_lsn if isinstance(meta, models.FilesMetadata) else None
    if (
        header.get("start") != parse_lsn(wal_start or meta.start_lsn)
        or header.get("stop") != parse_lsn(meta.stop_lsn)
        or header.get("timeline") != full.timeline
        or header.get("segment_size") != full.wal_segment_size
    ):
        raise RestoreError("a backup stream's WAL does not match its metadata")
