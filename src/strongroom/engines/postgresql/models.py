"""Typed PostgreSQL engine metadata and connections, read at the engine boundary.

The engine still writes plain JSON (``BackupResult.metadata``, the sealed connection);
these models are how it reads them back: a parent before an incremental, each link of a
restore chain, a stored connection. ``method`` tells the two backup methods apart,
``managed`` the two kinds of connection. Unknown fields are kept (``extra="allow"``): a
newer writer may add one, and the stored JSON of older backups lacks some optional ones.
docs/format.md describes every field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, field_validator

from strongroom.engines.registration import Registration


class _Model(BaseModel):
    # hide_input_in_errors: a connection holds a password; an error names fields, not values.
    model_config = ConfigDict(strict=True, extra="allow", frozen=True, hide_input_in_errors=True)


# What PostgreSQL can be built with (``--with-blocksize``, ``--with-wal-segsize``): the
# server reports these, and a backup and a restore size their buffers and files by them.
BLOCK_SIZES = (1024, 2048, 4096, 8192, 16384, 32768)
WAL_SEGMENT_SIZES = tuple(1 << shift for shift in range(20, 31))  # 1 MiB to 1 GiB


def check_sizes(block_size: int | None, wal_segment_size: int) -> None:
    """Raise ValueError for a block or WAL segment size no PostgreSQL has."""
    if block_size is not None and block_size not in BLOCK_SIZES:
        raise ValueError(f"block size {block_size} is not one PostgreSQL has")
    if wal_segment_size not in WAL_SEGMENT_SIZES:
        raise ValueError(f"WAL segment size {wal_segment_size} is not one PostgreSQL has")


class _ServerFacts(_Model):
    """What every PostgreSQL backup records of the server it came from."""

    format: int = 1
    start_lsn: str
    stop_lsn: str
    timeline: int
    system_identifier: str
    server_major: str
    server_version_num: int | None = None
    server_version: str | None = None
    wal_segment_size: int
    block_size: int | None = None
    data_checksums: bool | None = None
    bootstrap_superuser: str | None = None
    stream_bytes: int | None = None

    @field_validator("block_size")
    @classmethod
    def _block_size(cls, value: int | None) -> int | None:
        check_sizes(value, WAL_SEGMENT_SIZES[0])
        return value

    @field_validator("wal_segment_size")
    @classmethod
    def _wal_segment_size(cls, value: int) -> int:
        check_sizes(None, value)
        return value


class FilesMetadata(_ServerFacts):
    """``pgdata-files`` (full) and ``pgdata-pages`` (changed pages): the data directory's
    files between ``pg_backup_start`` and ``pg_backup_stop``, then its WAL window."""

    method: Literal["pgdata-files", "pgdata-pages"]
    wal_start_lsn: str | None = None  # older backups: the WAL window starts at start_lsn
    databases: list[str] = Field(default_factory=list)
    segment_offsets: list[int] = Field(default_factory=list)
    threshold_lsn: str | None = None  # pgdata-pages: pages changed since this LSN
    changed_pages: int | None = None
    page_format: str | None = None  # how changed pages are written; absent: whole pages

    @property
    def incremental(self) -> bool:
        return self.method == "pgdata-pages"


class ReplicationMetadata(_ServerFacts):
    """``pg_basebackup-tar`` (full) and ``wal-range`` (the WAL since the parent)."""

    method: Literal["pg_basebackup-tar", "wal-range"]
    slot: str | None = None
    wal_bytes: int | None = None
    parent_stop_lsn: str | None = None

    @property
    def incremental(self) -> bool:
        return self.method == "wal-range"


PostgresMetadata = Annotated[FilesMetadata | ReplicationMetadata, Field(discriminator="method")]


class ManagedConnection(_Model):
    """A server this engine runs in the instance's home."""

    managed: Literal[True] = True
    host: str
    port: int
    socket_dir: str
    superuser: str = "postgres"
    password: str | None = None
    database: str = "postgres"
    data_dir: str | None = None
    os_user: str | None = None
    slot: str | None = None
    users: list[str] = Field(default_factory=list)
    databases: list[str] = Field(default_factory=list)


class ExternalConnection(_Model):
    """A server of the operator's, reached over the network (and its data directory,
    when registered with ``data_dir`` on this host)."""

    managed: Literal[False]
    host: str
    port: int
    user: str
    password: str = ""
    database: str = "postgres"
    slot: str | None = None
    system_identifier: str | None = None
    max_slot_wal_keep_size: Any = None
    data_dir: str | None = None


class ExternalRegistration(Registration):
    """What registering an external PostgreSQL server takes; ``data_dir`` only for a
    server on this host whose files its backups may read."""

    port: int = 5432
    password: str = ""
    database: str = "postgres"
    data_dir: str | None = None

    @field_validator("password", "database", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any, info: Any) -> Any:
        if value is None or value == "":
            return "postgres" if info.field_name == "database" else ""
        return value

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value


def _kind(value: Any) -> str:
    managed = value.get("managed", True) if isinstance(value, dict) else value.managed
    return "managed" if managed else "external"


PostgresConnection = Annotated[
    Annotated[ManagedConnection, Tag("managed")] | Annotated[ExternalConnection, Tag("external")],
    Discriminator(_kind),
]

METADATA: TypeAdapter[FilesMetadata | ReplicationMetadata] = TypeAdapter(PostgresMetadata)
CONNECTION: TypeAdapter[ManagedConnection | ExternalConnection] = TypeAdapter(
    PostgresConnection, config=ConfigDict(hide_input_in_errors=True)
)
