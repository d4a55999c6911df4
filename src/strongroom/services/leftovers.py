"""What a killed writer leaves in a store: temporary objects of puts that never finished.

Only the service's own layout is looked at (``object_layout``), in the containers its
backups use; a temporary object is removed once it is older than
``ServiceRules.temporary_object_max_age``, never before."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime

import attrs

from strongroom.domain.model import Backup, BackupState
from strongroom.domain.ports import BackupQuery, Clock, UnitOfWorkFactory
from strongroom.services import object_layout
from strongroom.services.rules import ServiceRules
from strongroom.services.stores import StoreCatalog
from strongroom.storage.base import StorageBackend, TemporaryObjects
from strongroom.storage.errors import StorageError

log = logging.getLogger(__name__)


def containers_in_use(
    backups: Iterable[Backup], store_names: Iterable[str], default_container: str
) -> dict[str, set[str]]:
    """Store name → the containers the service's backups were written to (and the default
    one). A tenant names its backups' container, so a key found in one is not the service's
    for being there (``consistency`` proves a backup its own before removing it). A
    restore_from registration's container is not the service's: never listed."""
    containers = {name: {default_container} for name in store_names}
    for b in backups:
        if b.store_name and b.container and b.state is not BackupState.RESTORED:
            containers.setdefault(b.store_name, set()).add(b.container)
    return containers


def temporaries_of(store: StorageBackend) -> TemporaryObjects | None:
    """The store (or the one its wrappers hold) that writes through temporary objects."""
    current: object = store
    while not isinstance(current, TemporaryObjects):
        unwrap = getattr(current, "unwrap", None)
        if unwrap is None:
            return None
        current = unwrap()
    return current


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class TemporaryObjectSweeper:
    _uow: UnitOfWorkFactory
    _stores: StoreCatalog
    _rules: ServiceRules
    _clock: Clock

    def containers(self) -> dict[str, set[str]]:
        with self._uow() as uow:
            backups = uow.backups.query(BackupQuery())
            backups += uow.backups.in_states([BackupState.DELETING])
        return containers_in_use(backups, self._stores.names(), self._rules.default_container)

    def stale(self, store_name: str, container: str) -> list[str]:
        """Keys of the temporary objects in ``container`` older than the bound; raises
        StorageError when the store cannot be listed."""
        temporaries = temporaries_of(self._stores.backend(store_name))
        if temporaries is None:
            return []
        oldest_fresh = self._clock.now() - self._rules.temporary_object_max_age
        return [
            t.key
            for t in temporaries.list_temporary(f"{container}/")
            if _is_temporary(t.key)
            and datetime.fromtimestamp(t.modified, UTC).replace(tzinfo=None) < oldest_fresh
        ]

    def remove(self, store_name: str, key: str) -> None:
        temporaries = temporaries_of(self._stores.backend(store_name))
        if temporaries is not None and _is_temporary(key):
            temporaries.delete_temporary(key)

    def sweep(self) -> list[str]:
        """Remove every stale temporary object; return ``store:key`` of each removed."""
        removed: list[str] = []
        for store_name, containers in sorted(self.containers().items()):
            for container in sorted(containers):
                try:
                    for key in self.stale(store_name, container):
                        self.remove(store_name, key)
                        removed.append(f"{store_name}:{key}")
                        log.info("removed a stale temporary object: %s:%s", store_name, key)
                except StorageError as exc:
                    log.warning("temporary objects in %s:%s: %s", store_name, container, exc)
        return removed


def _is_temporary(key: str) -> bool:
    parsed = object_layout.parse(key)
    return parsed is not None and parsed.kind is object_layout.ObjectKind.TEMPORARY
