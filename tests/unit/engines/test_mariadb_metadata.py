"""mariabackup output parsing, metadata and chain rules (no server)."""

from __future__ import annotations

from typing import Any

import pytest

from strongroom.engines.errors import BackupError, IncompatibleBackupError, RestoreError
from strongroom.engines.mariadb import metadata

CHECKPOINTS_FULL = """backup_type = full-backuped
from_lsn = 0
to_lsn = 44404
last_lsn = 58118
recover_binlog_info = 0
"""

INFO = """uuid = ca79977e-ea57-11f1-a698-02fc00000001
name =
tool_name = mariabackup
tool_version = 10.11.19-MariaDB
server_version = 10.11.19-MariaDB-0+deb12u1-log
start_time = 2026-11-27 11:43:40
end_time = 2026-11-27 11:43:41
binlog_pos = filename 'mariadb-bin.000001', position '18425', GTID of the last change '0-1-3'
innodb_from_lsn = 0
innodb_to_lsn = 44404
"""


def make(backup_type: str, from_lsn: int, to_lsn: int, **extra: Any) -> dict[str, Any]:
    return {
        "datastore": "mariadb",
        "version": "10.11",
        "format": "xbstream",
        "backup_type": backup_type,
        "from_lsn": from_lsn,
        "to_lsn": to_lsn,
        "last_lsn": to_lsn + 10,
        "source_id": "src",
        **extra,
    }


def test_parse_version_and_series() -> None:
    text = "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64"
    assert metadata.parse_version(text) == (10, 11, 19)
    assert metadata.series((11, 4, 2)) == "11.4"
    assert metadata.series("10.6.18-MariaDB-log") == "10.6"
    assert metadata.parse_version("no digits here") is None
    with pytest.raises(ValueError):
        metadata.series("unknown")


def test_parse_checkpoints() -> None:
    parsed = metadata.parse_checkpoints(CHECKPOINTS_FULL)
    assert parsed == metadata.Checkpoints("full-backuped", 0, 44404, 58118)
    with pytest.raises(ValueError, match="to_lsn"):
        metadata.parse_checkpoints("backup_type = full-backuped\nfrom_lsn = 0\n")
    with pytest.raises(ValueError):
        metadata.parse_checkpoints(CHECKPOINTS_FULL.replace("44404", "abc"))


def test_parse_binlog_position_from_info_and_stderr() -> None:
    info = metadata.parse_key_values(INFO)
    assert metadata.parse_binlog_position(info["binlog_pos"]) == metadata.BinlogPosition(
        "mariadb-bin.000001", 18425, "0-1-3"
    )
    line = (
        "[00] 2026-11-27 11:43:40 MySQL binlog position: filename 'log.000002', "
        "position '4', GTID of the last change ''"
    )
    assert metadata.parse_binlog_position(line) == metadata.BinlogPosition("log.000002", 4, "")
    assert metadata.parse_binlog_position("") is None


def test_build_metadata_full_and_incremental() -> None:
    checkpoints = metadata.parse_checkpoints(CHECKPOINTS_FULL)
    info = metadata.parse_key_values(INFO)
    binlog = metadata.parse_binlog_position(info["binlog_pos"])
    full = metadata.build_metadata(
        checkpoints=checkpoints,
        info=info,
        binlog=binlog,
        server_series="10.11",
        server_version=info["server_version"],
        source_id="src",
        parent=None,
        page_size=16384,
    )
    assert full["backup_type"] == "full"
    assert (full["from_lsn"], full["to_lsn"], full["last_lsn"]) == (0, 44404, 58118)
    assert full["binlog"] == {"file": "mariadb-bin.000001", "position": 18425, "gtid": "0-1-3"}
    assert "parent_to_lsn" not in full
    incremental = metadata.build_metadata(
        checkpoints=metadata.Checkpoints("incremental", 44404, 50000, 61000),
        info=info,
        binlog=None,
        server_series="10.11",
        server_version="10.11.19",
        source_id="src",
        parent=full,
        page_size=16384,
    )
    assert incremental["backup_type"] == "incremental"
    assert incremental["parent_to_lsn"] == 44404
    assert incremental["binlog"] is None
    metadata.check_series(full, "10.11")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": "10.6"}, r"MariaDB 10\.6.*MariaDB 10\.11"),
        ({"version": "11.4"}, r"11\.4"),
        ({"datastore": "postgresql"}, "not a MariaDB backup"),
        ({"format": "tar"}, "format"),
        ({"version": None}, "version"),
        ({"to_lsn": "12"}, "to_lsn"),
        ({"backup_type": "differential"}, "type"),
    ],
)
def test_check_series_refuses(change: dict[str, Any], message: str) -> None:
    with pytest.raises(IncompatibleBackupError, match=message):
        metadata.check_series({**make("full", 0, 10), **change}, "10.11")


def test_check_chain() -> None:
    full = make("full", 0, 100)
    inc1 = make("incremental", 100, 200)
    inc2 = make("incremental", 200, 200)
    inc3 = make("incremental", 200, 300)
    metadata.check_chain([full, inc1, inc2, inc3], "10.11")
    with pytest.raises(RestoreError, match="empty"):
        metadata.check_chain([], "10.11")
    with pytest.raises(RestoreError, match="start with a full"):
        metadata.check_chain([inc1], "10.11")
    with pytest.raises(RestoreError, match="starts at LSN 200"):
        metadata.check_chain([full, inc2], "10.11")
    with pytest.raises(RestoreError, match="not an incremental"):
        metadata.check_chain([full, make("full", 0, 100)], "10.11")
    with pytest.raises(RestoreError, match="another server"):
        metadata.check_chain([full, {**inc1, "source_id": "other"}], "10.11")
    with pytest.raises(IncompatibleBackupError):
        metadata.check_chain([full, {**inc1, "version": "10.6"}], "10.11")


def test_check_parent() -> None:
    parent = make("full", 0, 100)
    assert metadata.check_parent(parent, "10.11", "src") == 100
    with pytest.raises(BackupError, match="another server"):
        metadata.check_parent(parent, "10.11", "elsewhere")
    with pytest.raises(BackupError, match=r"10\.6"):
        metadata.check_parent({**parent, "version": "10.6"}, "10.11", "src")


def test_check_extracted() -> None:
    meta = metadata.check_series(make("incremental", 100, 200), "10.11")
    metadata.check_extracted(metadata.Checkpoints("incremental", 100, 200, 250), meta)
    with pytest.raises(RestoreError, match="do not match"):
        metadata.check_extracted(metadata.Checkpoints("incremental", 100, 300, 350), meta)
    with pytest.raises(RestoreError, match="full-backuped"):
        metadata.check_extracted(metadata.Checkpoints("full-backuped", 0, 200, 250), meta)
