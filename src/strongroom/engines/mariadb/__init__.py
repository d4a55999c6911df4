"""The ``mariadb`` datastore engine (mariabackup, mbstream, mariadbd)."""

from strongroom.engines.mariadb.engine import MariaDbEngine

__all__ = ["MariaDbEngine"]
