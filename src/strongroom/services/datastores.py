"""Datastores and versions: what the engines on this host can back up and restore."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping

from strongroom.domain.errors import (
    DatastoreNotFoundError,
    DatastoreVersionNotFoundError,
    NotFoundError,
)
from strongroom.domain.model import Datastore, DatastoreVersion
from strongroom.domain.ports import UnitOfWorkFactory
from strongroom.engines.base import Engine

NAMESPACE = uuid.UUID("7d0f7c1e-3f55-4d3e-9a57-5f0c2b6f8a10")
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def datastore_id(name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"datastore:{name}"))


def version_id(name: str, version: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"datastore-version:{name}:{version}"))


class DatastoreCatalog:
    """Ids are derived from names, so they stay the same across restarts and hosts."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        engines: Mapping[str, Engine],
        *,
        reload_after: float | None = None,
    ) -> None:
        """``reload_after``: seconds after which the list is read again from the database
        (API processes, which see what the worker hosts detected)."""
        self._uow = uow
        self._engines = engines
        self._datastores: list[Datastore] = []
        self._reload_after = reload_after
        self._loaded_at = 0.0

    def load(self) -> None:
        with self._uow() as uow:
            self._datastores = uow.datastores.all()
        self._loaded_at = time.monotonic()

    def _current(self) -> list[Datastore]:
        if self._reload_after is not None and (
            time.monotonic() - self._loaded_at > self._reload_after
        ):
            self.load()
        return self._datastores

    def refresh(self, *, exclusive: bool = True) -> None:
        """Record what the engines on this host detect. ``exclusive`` (one host serves
        everything): versions no longer detected become inactive (their backups keep
        pointing at them)."""
        with self._uow(write=True) as uow:
            if exclusive:
                uow.datastores.deactivate_all()
            for name, engine in self._engines.items():
                info = engine.detect()
                if info is None:
                    continue
                vid = version_id(name, info.version)
                ds_id = datastore_id(name)
                uow.datastores.ensure(
                    Datastore(
                        id=ds_id,
                        name=name,
                        default_version_id=vid,
                        versions=(DatastoreVersion(vid, ds_id, name, info.version, True),),
                    )
                )
            uow.commit()
        self.load()

    def all(self, *, include_inactive: bool) -> list[Datastore]:
        current = self._current()
        if include_inactive:
            return list(current)
        return [
            Datastore(d.id, d.name, d.default_version_id, tuple(v for v in d.versions if v.active))
            for d in current
            if any(v.active for v in d.versions)
        ]

    def get(self, name_or_id: str, *, include_inactive: bool = True) -> Datastore:
        for ds in self.all(include_inactive=include_inactive):
            if ds.id == name_or_id:
                return ds
        for ds in self.all(include_inactive=include_inactive):
            if ds.name == name_or_id:
                return ds
        raise DatastoreNotFoundError(name_or_id)

    def version_by_id(self, vid: str) -> DatastoreVersion:
        for ds in self._current():
            for v in ds.versions:
                if v.id == vid:
                    return v
        raise DatastoreVersionNotFoundError(vid)

    def find_version(self, vid: str | None) -> DatastoreVersion | None:
        if vid is None:
            return None
        try:
            return self.version_by_id(vid)
        except DatastoreVersionNotFoundError:
            return None

    def version_in(self, datastore: Datastore, name_or_id: str) -> DatastoreVersion:
        """As Trove does: a UUID is looked up as an id (unknown → 404), a name within the
        datastore (unknown → 400)."""
        if UUID_RE.match(name_or_id):
            for v in datastore.versions:
                if v.id == name_or_id:
                    return v
            raise NotFoundError("DBDatastoreVersion Not Found")
        matches = [v for v in datastore.versions if v.name == name_or_id]
        if len(matches) != 1:
            raise DatastoreVersionNotFoundError(name_or_id)
        return matches[0]

    def default(self) -> Datastore:
        active = self.all(include_inactive=False)
        if not active:
            raise DatastoreNotFoundError("default")
        by_name = {d.name: d for d in active}
        return by_name.get("sqlite", active[0])

    def engine_for(self, version: DatastoreVersion) -> Engine:
        return self._engines[version.datastore_name]
