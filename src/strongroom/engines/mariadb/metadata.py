"""What a mariabackup run records, and the checks a backup chain must pass.

mariabackup writes two small text files for every backup: ``xtrabackup_checkpoints``
(backup type and the InnoDB LSNs) and ``xtrabackup_info`` (tool and server versions, the
binary log position and GTID taken under the backup lock). Both travel inside the xbstream
and, with ``--extra-lsndir``, are also written to a local directory; the engine parses the
local copies after the tool exits successfully, so nothing has to be fished out of the
stream. The functions here are pure and unit-tested.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from strongroom.engines.errors import (
    BackupError,
    IncompatibleBackupError,
    RestoreError,
    validation_reason,
)
from strongroom.engines.mariadb import models
from strongroom.engines.mariadb.models import MariaDBMetadata

DATASTORE = "mariadb"
FORMAT = "xbstream"
FORMAT_VERSION = 1

FULL = "full"
INCREMENTAL = "incremental"

_VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_BINLOG_RE = re.compile(
    r"filename '(?P<file>[^']*)', position '(?P<position>\d+)'"
    r"(?:, GTID of the last change '(?P<gtid>[^']*)')?"
)


@dataclass(frozen=True)
class Checkpoints:
    backup_type: str  # "full-backuped", "incremental", "full-prepared", …
    from_lsn: int
    to_lsn: int
    last_lsn: int


@dataclass(frozen=True)
class BinlogPosition:
    file: str
    position: int
    gtid: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "position": self.position, "gtid": self.gtid}


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``"mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 …"`` → ``(10, 11, 19)``."""
    match = _VERSION_RE.search(text)
    if match is None:
        return None
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def series(version: tuple[int, int, int] | str) -> str:
    """The major.minor series a datastore version is listed as (``"10.11"``)."""
    if isinstance(version, str):
        parsed = parse_version(version)
        if parsed is None:
            raise ValueError(f"not a MariaDB version: {version!r}")
        version = parsed
    return f"{version[0]}.{version[1]}"


def parse_key_values(text: str) -> dict[str, str]:
    """``key = value`` lines (the format of both mariabackup info files)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def parse_checkpoints(text: str) -> Checkpoints:
    values = parse_key_values(text)
    try:
        return Checkpoints(
            backup_type=values["backup_type"],
            from_lsn=int(values["from_lsn"]),
            to_lsn=int(values["to_lsn"]),
            last_lsn=int(values["last_lsn"]),
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"malformed xtrabackup_checkpoints: missing or bad {exc}") from None


def parse_binlog_position(text: str) -> BinlogPosition | None:
    """The binary log position from ``xtrabackup_info``'s ``binlog_pos`` value or from
    mariabackup's ``MySQL binlog position: …`` line; ``None`` when the server has no
    binary log."""
    match = _BINLOG_RE.search(text)
    if match is None:
        return None
    return BinlogPosition(
        file=match["file"], position=int(match["position"]), gtid=match["gtid"] or ""
    )


def build_metadata(
    *,
    checkpoints: Checkpoints,
    info: Mapping[str, str],
    binlog: BinlogPosition | None,
    server_series: str,
    server_version: str,
    source_id: str,
    parent: Mapping[str, Any] | None,
    page_size: int | None,
) -> dict[str, Any]:
    """The JSON-safe engine metadata recorded in the manifest."""
    incremental = parent is not None
    metadata: dict[str, Any] = {
        "datastore": DATASTORE,
        "version": server_series,
        "server_version": server_version,
        "tool_version": info.get("tool_version", ""),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backup_type": INCREMENTAL if incremental else FULL,
        "from_lsn": checkpoints.from_lsn,
        "to_lsn": checkpoints.to_lsn,
        "last_lsn": checkpoints.last_lsn,
        "binlog": binlog.as_dict() if binlog is not None else None,
        "source_id": source_id,
        "innodb_page_size": page_size,
        "start_time": info.get("start_time", ""),
        "end_time": info.get("end_time", ""),
    }
    if parent is not None:
        metadata["parent_to_lsn"] = int(parent["to_lsn"])
    return metadata


def check_series(metadata: Mapping[str, Any], installed_series: str) -> MariaDBMetadata:
    """The typed metadata, if this installation can prepare and start that backup;
    ``IncompatibleBackupError`` if not."""
    datastore = metadata.get("datastore")
    if datastore != DATASTORE:
        raise IncompatibleBackupError(
            f"this is a {datastore or 'unknown'} backup, not a MariaDB backup"
        )
    fmt = metadata.get("format")
    if fmt != FORMAT:
        raise IncompatibleBackupError(f"unsupported MariaDB backup format {fmt!r}")
    version = metadata.get("version")
    if not isinstance(version, str) or not version:
        raise IncompatibleBackupError("the backup does not record its MariaDB version")
    if version != installed_series:
        raise IncompatibleBackupError(
            f"the backup was taken from MariaDB {version}; this host has MariaDB "
            f"{installed_series}, and mariabackup only prepares backups of its own "
            f"release series (restore it on a MariaDB {version} host)"
        )
    try:
        return models.METADATA.validate_python(metadata)
    except ValidationError as exc:
        raise IncompatibleBackupError(
            f"the backup metadata has no valid {validation_reason(exc)}"
        ) from None


def check_chain(chain: Sequence[Mapping[str, Any]], installed_series: str) -> list[MariaDBMetadata]:
    """A full backup first, then incrementals each starting where the previous ended;
    returns the links' typed metadata."""
    if not chain:
        raise RestoreError("nothing to restore: the backup chain is empty")
    links = [check_series(link, installed_series) for link in chain]
    if links[0].backup_type != FULL:
        raise RestoreError("a MariaDB backup chain must start with a full backup")
    for index, (previous, link) in enumerate(itertools.pairwise(links), start=1):
        if link.backup_type != INCREMENTAL:
            raise RestoreError(f"link {index} of the chain is not an incremental backup")
        if link.from_lsn != previous.to_lsn:
            raise RestoreError(
                f"link {index} of the chain starts at LSN {link.from_lsn}, but the "
                f"previous backup ends at LSN {previous.to_lsn}"
            )
        if link.source_id and previous.source_id != link.source_id:
            raise RestoreError(f"link {index} of the chain comes from another server")
    return links


def check_parent(parent: Mapping[str, Any], installed_series: str, source_id: str) -> int:
    """The LSN an incremental backup on top of ``parent`` starts from."""
    try:
        typed = check_series(parent, installed_series)
    except IncompatibleBackupError as exc:
        raise BackupError(f"cannot take an incremental backup on this parent: {exc}") from None
    if typed.source_id and typed.source_id != source_id:
        raise BackupError(
            "cannot take an incremental backup: the parent backup comes from another server"
        )
    return typed.to_lsn


def check_extracted(checkpoints: Checkpoints, metadata: MariaDBMetadata) -> None:
    """The stream that was extracted is the backup the metadata describes."""
    expected_type = "full-backuped" if metadata.backup_type == FULL else "incremental"
    if checkpoints.backup_type != expected_type:
        raise RestoreError(
            f"the backup stream holds a {checkpoints.backup_type} backup, "
            f"the manifest says {metadata.backup_type}"
        )
    if (checkpoints.from_lsn, checkpoints.to_lsn) != (metadata.from_lsn, metadata.to_lsn):
        raise RestoreError(
            "the backup stream's LSNs "
            f"({checkpoints.from_lsn}..{checkpoints.to_lsn}) do not match the manifest's "
            f"({metadata.from_lsn}..{metadata.to_lsn})"
        )
