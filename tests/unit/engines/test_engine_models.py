"""The typed engine models load what the engines write and have stored: each shape below
is what the current code writes (after a JSON round trip, as the manifest and the metadata
database keep it), plus the older and newer variants a stored backup may have."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from strongroom.engines import models as engine_models
from strongroom.engines.errors import IncompatibleBackupError, validation_reason
from strongroom.engines.mariadb import metadata as mariadb_metadata
from strongroom.engines.mariadb import models as mariadb_models
from strongroom.engines.postgresql import methods
from strongroom.engines.postgresql import models as pg_models
from strongroom.engines.sqlite import models as sqlite_models
from strongroom.engines.sqlite.stream import pack_hashes

FACTS = {
    "server_version_num": 160004,
    "server_version": "16.4",
    "server_major": "16",
    "wal_segment_size": 16777216,
    "block_size": 8192,
    "data_checksums": False,
    "bootstrap_superuser": "postgres",
}
PG_FILES_FULL = {
    "method": "pgdata-files",
    "format": 1,
    "start_lsn": "0/2000028",
    "stop_lsn": "0/2000138",
    "wal_start_lsn": "0/2000000",
    "timeline": 1,
    "system_identifier": "7412345678901234567",
    "databases": ["base/1", "base/4", "base/5"],
    "stream_bytes": 40960,
    "segment_offsets": [52, 1048628],
    **FACTS,
}
PG_FILES_PAGES = {
    **PG_FILES_FULL,
    "method": "pgdata-pages",
    "start_lsn": "0/3000028",
    "stop_lsn": "0/3000138",
    "wal_start_lsn": "0/3000000",
    "threshold_lsn": "0/2000028",
    "changed_pages": 3,
}
PG_BASEBACKUP = {
    "method": "pg_basebackup-tar",
    "format": 1,
    "start_lsn": "0/2000028",
    "stop_lsn": "0/2000100",
    "timeline": 1,
    "system_identifier": "7412345678901234567",
    "slot": "strongroom_0a1b2c3d",
    "stream_bytes": 31457280,
    **FACTS,
}
PG_WAL_RANGE = {
    **PG_BASEBACKUP,
    "method": "wal-range",
    "start_lsn": "0/2000100",
    "stop_lsn": "0/3000060",
    "wal_bytes": 16777056,
    "parent_stop_lsn": "0/2000100",
}
SQLITE_FULL = {
    "format": "sqlite-pages",
    "format_version": 1,
    "kind": "full",
    "page_size": 4096,
    "page_count": 2,
    "journal_mode": "wal",
    "sqlite_version": "3.40.1",
    "sha256": "ab" * 32,
    "parent_sha256": None,
    "pages_written": 2,
    "stream_bytes": 8300,
    "page_hash": "blake2b-64",
    "page_hashes": pack_hashes(bytes(16)),
    "snapshot": {"wal_frames": 0, "retries": 0},
}


def _mariadb(parent: dict[str, Any] | None) -> dict[str, Any]:
    return mariadb_metadata.build_metadata(
        checkpoints=mariadb_metadata.Checkpoints(
            "incremental" if parent else "full-backuped", 0, 44404, 44404
        ),
        info={"tool_version": "10.11.6-MariaDB", "start_time": "2026-12-06 10:00:00"},
        binlog=mariadb_metadata.BinlogPosition("mysql-bin.000002", 342, "0-1-2"),
        server_series="10.11",
        server_version="10.11.6",
        source_id="9f86d081884c7d65",
        parent=parent,
        page_size=16384,
    )


def _stored(shape: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(shape))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("shape", "model", "method"),
    [
        (PG_FILES_FULL, pg_models.FilesMetadata, "files"),
        (PG_FILES_PAGES, pg_models.FilesMetadata, "files"),
        (PG_BASEBACKUP, pg_models.ReplicationMetadata, "replication"),
        (PG_WAL_RANGE, pg_models.ReplicationMetadata, "replication"),
        (_mariadb(None), mariadb_models.MariaDBMetadata, "mariabackup"),
        (SQLITE_FULL, sqlite_models.SqliteMetadata, "sqlite-pages"),
    ],
)
def test_stored_metadata_loads_as_its_model(
    shape: dict[str, Any], model: type, method: str
) -> None:
    typed = engine_models.METADATA.validate_python(_stored(shape))
    assert type(typed) is model
    assert engine_models.method_of(_stored(shape)) == method
    # Nothing is lost: dumping gives back what was stored, extra fields included.
    assert typed.model_dump(exclude_unset=True) == _stored(shape)


def test_postgresql_chain_metadata_is_typed() -> None:
    full = methods.parse(_stored(PG_FILES_FULL))
    pages = methods.parse(_stored(PG_FILES_PAGES))
    assert isinstance(pages, pg_models.FilesMetadata) and pages.incremental
    assert not full.incremental and full.timeline == 1 and full.segment_offsets == [52, 1048628]
    assert pages.threshold_lsn == full.start_lsn
    wal = methods.parse(_stored(PG_WAL_RANGE))
    assert isinstance(wal, pg_models.ReplicationMetadata) and wal.slot == "strongroom_0a1b2c3d"


def test_older_and_newer_postgresql_file_metadata_load() -> None:
    older = {
        k: v for k, v in PG_FILES_FULL.items() if k not in ("wal_start_lsn", "segment_offsets")
    }
    typed = methods.parse(_stored(older))
    assert isinstance(typed, pg_models.FilesMetadata)
    assert typed.wal_start_lsn is None and typed.segment_offsets == []
    newer = methods.parse(_stored({**PG_FILES_PAGES, "page_format": "deltas-v1"}))
    assert isinstance(newer, pg_models.FilesMetadata) and newer.page_format == "deltas-v1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "pgdata-blocks"}, "method"),
        ({"timeline": "1"}, "timeline"),
        ({"system_identifier": 7412345678901234567}, "system_identifier"),
        ({"stop_lsn": None}, "stop_lsn"),
    ],
)
def test_malformed_postgresql_metadata_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(IncompatibleBackupError, match=message):
        methods.parse({**PG_FILES_FULL, **change})


def test_mariadb_metadata_round_trips_through_its_checks() -> None:
    full = _mariadb(None)
    incremental = {**_mariadb(full), "from_lsn": 44404, "to_lsn": 50000}
    links = mariadb_metadata.check_chain([_stored(full), _stored(incremental)], "10.11")
    assert [link.backup_type for link in links] == ["full", "incremental"]
    assert links[0].binlog is not None and links[0].binlog.position == 342
    assert links[1].parent_to_lsn == 44404


@pytest.mark.parametrize(
    "connection",
    [
        {  # PostgresEngine.create_instance
            "host": "127.0.0.1",
            "port": 54321,
            "socket_dir": "/srv/instances/i1/run",
            "superuser": "postgres",
            "password": "s3cret-pw",
            "database": "postgres",
            "data_dir": "/srv/instances/i1/data",
            "managed": True,
            "os_user": "sr-i1",
            "slot": "strongroom_0a1b2c3d",
            "users": ["app"],
            "databases": ["appdb"],
        },
        {  # external.register, with a data directory on this host
            "host": "db.example",
            "port": 5432,
            "user": "backup",
            "password": "s3cret-pw",
            "database": "postgres",
            "managed": False,
            "slot": "strongroom_0a1b2c3d",
            "system_identifier": "7412345678901234567",
            "max_slot_wal_keep_size": "-1",
            "data_dir": "/var/lib/postgresql/16/main",
        },
    ],
)
def test_stored_postgresql_connections_load(connection: dict[str, Any]) -> None:
    typed = pg_models.CONNECTION.validate_python(_stored(connection))
    assert typed.managed is connection["managed"]
    assert typed.model_dump(exclude_unset=True) == connection


def test_stored_mariadb_and_sqlite_connections_load() -> None:
    managed = {
        "host": "127.0.0.1",
        "port": 33061,
        "socket": "/srv/instances/i2/run/mysqld.sock",
        "datadir": "/srv/instances/i2/data",
        "defaults_file": "/srv/instances/i2/my.cnf",
        "admin_user": "strongroom_admin",
        "admin_password": "A-s3cret",
        "backup_user": "strongroom_backup",
        "backup_password": "B-s3cret",
        "managed": True,
        "os_user": "sr-i2",
        "instance_uid": "00" * 16,
        "users": [{"name": "bob", "host": "%", "databases": ["app"]}],
        "databases": ["app"],
    }
    typed = mariadb_models.CONNECTION.validate_python(_stored(managed))
    assert isinstance(typed, mariadb_models.ManagedConnection)
    assert typed.users[0].databases == ["app"]
    external = {
        "host": "db",
        "port": 3306,
        "user": "u",
        "password": "p",
        "datadir": "/var/lib/mysql",
        "managed": False,
        "server_version": "10.11.6-MariaDB",
        "log_bin": True,
        "instance_uid": "ab" * 16,
    }
    ext = mariadb_models.CONNECTION.validate_python(_stored(external))
    assert isinstance(ext, mariadb_models.ExternalConnection) and ext.log_bin is True
    sqlite = {"path": "/data/app.db", "root": "/data", "dev": 2049, "ino": 131}
    assert sqlite_models.CONNECTION.validate_python(sqlite).ino == 131


def test_a_refused_connection_never_names_its_password() -> None:
    with pytest.raises(ValidationError) as info:
        pg_models.CONNECTION.validate_python(
            {"managed": False, "host": "h", "port": "5432", "user": "u", "password": "s3cret-pw"}
        )
    assert "s3cret-pw" not in validation_reason(info.value)


@pytest.mark.parametrize(
    "connection",
    [
        {"managed": False, "host": "h", "port": "5432", "user": "u", "password": "s3cret-pw"},
        {"managed": True, "port": 5432, "password": "s3cret-pw"},  # fields missing
    ],
)
def test_a_connection_error_as_pydantic_prints_it_has_no_password(
    connection: dict[str, object],
) -> None:
    """Callers log ``str(exc)`` of a validation error; it names fields, never values."""
    with pytest.raises(ValidationError) as info:
        pg_models.CONNECTION.validate_python(connection)
    assert "s3cret-pw" not in str(info.value)
