"""SQLite engine: consistent page-image backups of live SQLite files."""

from strongroom.engines.sqlite.engine import SqliteEngine

__all__ = ["SqliteEngine"]
