"""Typed MariaDB engine metadata and connections, read at the engine boundary.

The engine writes plain JSON (:func:`metadata.build_metadata`, the sealed connection);
these models are how it reads them back. ``method`` is implied: every MariaDB backup is
``mariabackup --stream=xbstream`` (``datastore`` and ``format`` say so); ``backup_type``
tells a full from an incremental, ``managed`` the two kinds of connection. Unknown fields
are kept (``extra="allow"``). docs/format.md describes every field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, field_validator

from strongroom.engines.registration import Registration


class _Model(BaseModel):
    # hide_input_in_errors: a connection holds a password; an error names fields, not values.
    model_config = ConfigDict(strict=True, extra="allow", frozen=True, hide_input_in_errors=True)


class Binlog(_Model):
    file: str
    position: int
    gtid: str = ""


class MariaDBMetadata(_Model):
    """One ``mariabackup`` run: its LSN range and where the binary log stood."""

    datastore: Literal["mariadb"]
    format: Literal["xbstream"]
    format_version: int = 1
    version: str  # the release series ("10.11"): mariabackup prepares only its own
    server_version: str = ""
    tool_version: str = ""
    backup_type: Literal["full", "incremental"]
    from_lsn: int
    to_lsn: int
    last_lsn: int | None = None
    binlog: Binlog | None = None
    source_id: str = ""  # which server: incrementals apply only to its own backups
    innodb_page_size: int | None = None
    start_time: str = ""
    end_time: str = ""
    parent_to_lsn: int | None = None

    @property
    def method(self) -> str:
        return "mariabackup-xbstream"


class Account(_Model):
    name: str
    host: str = "%"
    databases: list[str] = Field(default_factory=list)


class ManagedConnection(_Model):
    managed: Literal[True]
    host: str
    port: int
    socket: str | None = None
    datadir: str | None = None
    defaults_file: str | None = None
    admin_user: str
    admin_password: str
    backup_user: str
    backup_password: str
    os_user: str | None = None
    instance_uid: str = ""
    users: list[Account] = Field(default_factory=list)
    databases: list[str] | None = None  # managed servers made before it was recorded lack it


class Address(BaseModel):
    """Where a server is reached, read from either kind of connection: a managed server
    through its socket, an external one (or a managed one without a socket) over TCP."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, hide_input_in_errors=True)

    managed: bool = False
    socket: str | None = None
    host: str
    port: int

    @property
    def socket_path(self) -> str | None:
        return self.socket if self.managed and self.socket else None


class ExternalConnection(_Model):
    managed: Literal[False] = False
    host: str
    port: int
    user: str
    password: str = ""
    datadir: str | None = None
    server_version: str | None = None
    log_bin: bool | None = None
    instance_uid: str = ""


class ExternalRegistration(Registration):
    """What registering an external MariaDB server takes: mariabackup runs on this host
    and reads ``datadir``, so it is required. ``user`` and ``password`` go into an option
    file: no control characters."""

    port: int = 3306
    datadir: str

    @field_validator("host")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @field_validator("user", "password")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("datadir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path (mariabackup reads the server's files)")
        return value


def _kind(value: Any) -> str:
    managed = value.get("managed") if isinstance(value, dict) else value.managed
    return "managed" if managed else "external"


MariaDBConnection = Annotated[
    Annotated[ManagedConnection, Tag("managed")] | Annotated[ExternalConnection, Tag("external")],
    Discriminator(_kind),
]

METADATA: TypeAdapter[MariaDBMetadata] = TypeAdapter(MariaDBMetadata)
CONNECTION: TypeAdapter[ManagedConnection | ExternalConnection] = TypeAdapter(
    MariaDBConnection, config=ConfigDict(hide_input_in_errors=True)
)
