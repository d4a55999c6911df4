"""Opening the metadata database at start-up: the data dir and its modes, the schema check,
the sessions and the unit-of-work factory over them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from strongroom.config import Settings
from strongroom.domain.ports import UnitOfWorkFactory
from strongroom.persistence import migrate
from strongroom.persistence.unit_of_work import SqlUnitOfWork, make_engine, unit_of_work_factory


class StartupError(Exception):
    """A configuration the service cannot run with; the message says what to fix."""


def prepare_data_dir(settings: Settings) -> None:
    """Private by default. The data dir and the instances dir can be traversed (not listed)
    by others because managed servers run as their own OS users (e.g. ``postgres``)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o711)
    instances = settings.data_dir / "instances"
    instances.mkdir(exist_ok=True)
    instances.chmod(0o711)
    for private in ("objects",):
        path = settings.data_dir / private
        path.mkdir(exist_ok=True)
        path.chmod(0o700)


def data_dir_unreachable(data_dir: Path) -> str | None:
    """As root, managed PostgreSQL and MariaDB servers run as their own OS users: each
    directory above the data dir must let others through (x), or their tools cannot reach
    their files. What is wrong, in one line, or None."""
    if os.geteuid() != 0:
        return None
    for parent in data_dir.absolute().parents:
        try:
            mode = parent.stat().st_mode
        except OSError:
            continue  # not made yet: created with the usual modes
        if not mode & stat.S_IXOTH:
            return (
                f"{parent} (mode {stat.S_IMODE(mode):04o}) does not let other users through: "
                f"managed PostgreSQL and MariaDB instances under {data_dir} will fail to "
                f"start; run `chmod o+x {parent}` or choose another data_dir"
            )
    return None


def restrict_metadata_file(settings: Settings) -> None:
    """The metadata DB holds sealed secrets and token digests: owner only."""
    if settings.database_url is None:
        for suffix in ("", "-wal", "-shm"):
            path = settings.data_dir / f"strongroom.db{suffix}"
            if path.exists():
                path.chmod(0o600)


def metadata_sessions(settings: Settings, *, migrate_now: bool) -> sessionmaker[Session]:
    prepare_data_dir(settings)
    db = make_engine(settings.metadata_url)
    if migrate_now:
        migrate.upgrade(db)
    elif not migrate.is_current(db):
        raise StartupError(
            "the metadata database is not at the current schema: run `strongroom db upgrade`"
        )
    restrict_metadata_file(settings)
    return unit_of_work_factory(db)


def open_metadata(settings: Settings, *, migrate_now: bool) -> UnitOfWorkFactory:
    return uow_factory(metadata_sessions(settings, migrate_now=migrate_now))


def uow_factory(sessions: sessionmaker[Session]) -> UnitOfWorkFactory:

    def uow(*, write: bool = False, read_only: bool = False) -> SqlUnitOfWork:
        return SqlUnitOfWork(sessions, write=write, read_only=read_only)

    return uow
