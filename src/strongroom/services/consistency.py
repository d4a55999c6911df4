"""`strongroom check`: compare the metadata database with what the stores hold.

Reports orphaned objects (a backup directory no backup row knows: a crash between writing
objects and recording them, or a failed clean-up), completed backups whose manifest is
missing, and backups still running with no job alive. ``fix`` removes orphaned objects only:
it never deletes data a row refers to."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from strongroom.domain.model import BackupState
from strongroom.domain.ports import BackupQuery, UnitOfWorkFactory
from strongroom.services import object_layout
from strongroom.services.rules import ServiceRules
from strongroom.services.stores import StoreCatalog
from strongroom.storage.errors import ObjectNotFoundError, StorageError

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    orphaned: dict[str, list[str]] = field(default_factory=dict)  # store → object keys
    missing_manifests: list[str] = field(default_factory=list)  # backup ids
    stuck: list[str] = field(default_factory=list)  # running backups without a live job
    unreachable: dict[str, str] = field(default_factory=dict)  # store → error
    removed: int = 0

    @property
    def clean(self) -> bool:
        return not (self.orphaned or self.missing_manifests or self.stuck or self.unreachable)


class ConsistencyChecker:
    def __init__(self, *, uow: UnitOfWorkFactory, stores: StoreCatalog, rules: ServiceRules):
        self._uow = uow
        self._stores = stores
        self._rules = rules

    def run(self, *, fix: bool = False) -> CheckReport:
        report = CheckReport()
        with self._uow() as uow:
            backups = uow.backups.query(BackupQuery())
            deleting = uow.backups.in_states([BackupState.DELETING])
            strategies_containers = {
                s.swift_container
                for p in {b.project_id for b in backups}
                for s in uow.strategies.list(p, None)
            }
            live_jobs = {j.target_id for j in uow.jobs.unfinished()}
        known = {b.id for b in backups} | {b.id for b in deleting}
        # A restore_from registration refers to objects by location, not by its own id.
        for b in backups:
            if b.state is BackupState.RESTORED and b.location_ref:
                parts = b.location_ref.rstrip("/").split("/")
                if len(parts) >= 2:
                    known.add(parts[-2])
        # Where backups may have been written: the default and the strategies' containers
        # (those a store cannot hold, such as an S3 bucket with capitals, hold nothing
        # there), and every container a backup row names.
        candidates = {self._rules.default_container} | strategies_containers
        containers: dict[str, set[str]] = {
            name: {c for c in candidates if self._stores.container_allowed(name, c)}
            for name in self._stores.names()
        }
        for b in [*backups, *deleting]:
            if b.store_name and b.container and b.state is not BackupState.RESTORED:
                containers.setdefault(b.store_name, set()).add(b.container)
        for store_name, names in sorted(containers.items()):
            store = self._stores.backend(store_name)
            try:
                for container in sorted(names):
                    for key in store.list(f"{container}/"):
                        parts = key.split("/")
                        if len(parts) < 3 or parts[1] in known:
                            continue
                        report.orphaned.setdefault(store_name, []).append(key)
            except StorageError as exc:
                report.unreachable[store_name] = f"{type(exc).__name__}: {exc}"
        for b in backups:
            if b.state is BackupState.COMPLETED and b.store_name and b.container:
                key = object_layout.manifest_key(b.container, b.id)
                try:
                    self._stores.backend(b.store_name).stat(key)
                except ObjectNotFoundError:
                    report.missing_manifests.append(b.id)
                except StorageError as exc:
                    report.unreachable.setdefault(b.store_name, f"{type(exc).__name__}: {exc}")
            if b.is_running and b.id not in live_jobs:
                report.stuck.append(b.id)
        if fix:
            for store_name, keys in report.orphaned.items():
                store = self._stores.backend(store_name)
                for key in keys:
                    store.delete(key)
                    report.removed += 1
        return report
