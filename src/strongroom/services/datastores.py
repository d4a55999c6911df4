"""Datastores and versions: what the engines on this host can back up and restore."""

from __future__ import annotations

import re
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

    def __init__(self, uow: UnitOfWorkFactory, engines: Mapping[str, Engine]) -> None:
        self._uow = uow
        self._engines = engines
        self._datastores: list[Datastore] = []

    def refresh(self) -> None:
        """Record what the engines detect; versions no longer detected become inactive
        (their backups keep pointing at them)."""
        with self._uow(write=True) as uow:
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
            self._datastores = uow.datastores.all()

    def all(self, *, include_inactive: bool) -> list[Datastore]:
        if include_inactive:
            return list(self._datastores)
        return [
            Datastore(d.id, d.name, d.default_version_id, tuple(v for v in d.versions if v.active))
            for d in self._datastores
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
        for ds in self._datastores:
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
        """Contract §4.7: a UUID is looked up as an id (unknown → 404), a name within the
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
