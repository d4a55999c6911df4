"""Typed SQLite engine metadata and connections, read at the engine boundary.

The engine writes plain JSON (``SqliteEngine.backup``, the sealed connection); these
models are how it reads them back. ``format`` (``"sqlite-pages"``) is the method: every
SQLite backup is a page stream; ``kind`` tells a full from an incremental. Unknown fields
are kept (``extra="allow"``). docs/format.md describes every field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

MIN_PAGE_SIZE, MAX_PAGE_SIZE = 512, 65536


class _Model(BaseModel):
    # hide_input_in_errors: a connection holds a password; an error names fields, not values.
    model_config = ConfigDict(strict=True, extra="allow", frozen=True, hide_input_in_errors=True)


def _sha256_hex(value: str | None) -> str | None:
    if value is not None:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError("not a SHA-256 digest")
    return value


class SqliteMetadata(_Model):
    """One page stream: the database image's pages (all, or those changed since the
    parent), the image's SHA-256 and every page's BLAKE2b-64 for the next incremental."""

    format: Literal["sqlite-pages"]
    format_version: Literal[1]
    kind: Literal["full", "incremental"]
    page_size: int
    page_count: int = Field(ge=0, lt=1 << 32)
    sha256: str
    parent_sha256: str | None = None
    page_hash: Literal["blake2b-64"]
    page_hashes: str
    journal_mode: str | None = None
    sqlite_version: str | None = None
    pages_written: int | None = None
    stream_bytes: int | None = None
    snapshot: dict[str, Any] | None = None

    @property
    def method(self) -> str:
        return self.format

    @field_validator("page_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if not MIN_PAGE_SIZE <= value <= MAX_PAGE_SIZE or value & (value - 1):
            raise ValueError(f"invalid page size {value}")
        return value

    _sha = field_validator("sha256", "parent_sha256")(_sha256_hex)


class SqliteConnection(_Model):
    """A SQLite file: where it is, the directory it is opened beneath, and which file it
    was when registered (device and inode)."""

    path: str
    root: str = "/"
    dev: int | None = None
    ino: int | None = None


METADATA: TypeAdapter[SqliteMetadata] = TypeAdapter(SqliteMetadata)
CONNECTION: TypeAdapter[SqliteConnection] = TypeAdapter(SqliteConnection)
