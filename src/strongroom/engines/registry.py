"""build_engine_registry(): datastore name → engine, listed by hand."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from strongroom.engines.allowlist import AllowList
from strongroom.engines.base import Engine


@dataclass(frozen=True)
class EngineSettings:
    sqlite_roots: AllowList = field(default_factory=AllowList)
    postgresql_allowed_hosts: AllowList = field(default_factory=AllowList)
    postgresql_allowed_data_dirs: AllowList = field(default_factory=AllowList)
    mariadb_allowed_hosts: AllowList = field(default_factory=AllowList)
    mariadb_allowed_datadirs: AllowList = field(default_factory=AllowList)
    bind_address: str = "127.0.0.1"
    timeout: float = 6 * 3600
    postgresql_page_deltas: bool = False
    enabled: Sequence[str] = field(default=("sqlite", "postgresql", "mariadb"))


def _sqlite(settings: EngineSettings) -> Engine:
    from strongroom.engines.sqlite import SqliteEngine

    return SqliteEngine(allowed_roots=settings.sqlite_roots)


def _postgresql(settings: EngineSettings) -> Engine:
    from strongroom.engines.postgresql import PostgresEngine

    return PostgresEngine(
        bind_address=settings.bind_address,
        allowed_hosts=settings.postgresql_allowed_hosts,
        allowed_data_dirs=settings.postgresql_allowed_data_dirs,
        timeout=settings.timeout,
        page_deltas=settings.postgresql_page_deltas,
    )


def _mariadb(settings: EngineSettings) -> Engine:
    from strongroom.engines.mariadb import MariaDbEngine

    return MariaDbEngine(
        bind_address=settings.bind_address,
        allowed_hosts=settings.mariadb_allowed_hosts,
        allowed_datadirs=settings.mariadb_allowed_datadirs,
        timeout=settings.timeout,
    )


FACTORIES: dict[str, Callable[[EngineSettings], Engine]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
    "mariadb": _mariadb,
}


def build_engine_registry(settings: EngineSettings) -> dict[str, Engine]:
    """The enabled engines; whether each one's tools are installed is ``detect()``'s say."""
    return {name: FACTORIES[name](settings) for name in settings.enabled}
