"""Every engine's backup metadata as one typed union, told apart by ``method``.

Each engine reads its own model at its boundary (``postgresql/models.py``,
``mariadb/models.py``, ``sqlite/models.py``); this union is for what reads metadata of
any engine (tests, tools). MariaDB and SQLite metadata carry no ``method`` field: it
follows from ``datastore`` / ``format``, as it always has in stored backups.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Discriminator, Tag, TypeAdapter

from strongroom.engines.mariadb.models import MariaDBMetadata
from strongroom.engines.postgresql.models import FilesMetadata, ReplicationMetadata
from strongroom.engines.sqlite.models import SqliteMetadata

AnyMetadata = FilesMetadata | ReplicationMetadata | MariaDBMetadata | SqliteMetadata


def method_of(value: Any) -> str | None:
    """``files`` / ``replication`` (PostgreSQL), ``mariabackup``, ``sqlite-pages``."""
    if not isinstance(value, dict):
        return getattr(value, "method", None)
    method = value.get("method")
    if method in ("pgdata-files", "pgdata-pages"):
        return "files"
    if method in ("pg_basebackup-tar", "wal-range"):
        return "replication"
    if value.get("datastore") == "mariadb":
        return "mariabackup"
    if value.get("format") == "sqlite-pages":
        return "sqlite-pages"
    return None


METADATA: TypeAdapter[AnyMetadata] = TypeAdapter(
    Annotated[
        Annotated[FilesMetadata, Tag("files")]
        | Annotated[ReplicationMetadata, Tag("replication")]
        | Annotated[MariaDBMetadata, Tag("mariabackup")]
        | Annotated[SqliteMetadata, Tag("sqlite-pages")],
        Discriminator(method_of),
    ]
)
