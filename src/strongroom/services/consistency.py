"""`strongroom check`: compare the metadata database with what the stores hold.

Reports orphaned objects (keys of the service's layout, in a container its backups use,
of a backup no row knows: a crash between writing objects and recording them, or a failed
clean-up), temporary objects older than the bound (a writer killed mid-put), completed
backups whose manifest is missing, and backups still running with no job alive. Any other
key (another application's file in a shared container) is never looked at.

A tenant names the container its backups go to, so a key of that layout is not the
service's because of where it is: a backup no row knows is orphaned only when its manifest
opens and verifies with this service's master key at its own backup id's place, and is
not one of the service's metadata backups (``SERVICE_PROJECT``). Metadata backups are
reported as such; any other key of no row (another deployment's objects, chunks whose
manifest was never written: they are sealed with a key only a manifest holds) is reported
as unverified. Neither is ever removed.

``fix`` removes orphaned and stale temporary objects only, and reports each key it
removes: it never deletes data a row refers to."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import attrs

from strongroom.domain.model import SERVICE_PROJECT, BackupState
from strongroom.domain.ports import BackupQuery, Clock, UnitOfWorkFactory
from strongroom.pipeline.errors import FormatError
from strongroom.pipeline.reader import OpenedManifest, open_manifest
from strongroom.services import object_layout
from strongroom.services.clock import SystemClock
from strongroom.services.copy_objects import at_copy
from strongroom.services.leftovers import TemporaryObjectSweeper, containers_in_use
from strongroom.services.rules import ServiceRules
from strongroom.services.stores import StoreCatalog
from strongroom.storage.base import StorageBackend
from strongroom.storage.errors import ObjectNotFoundError, StorageError

log = logging.getLogger(__name__)

MAX_CHAIN = 10_000


@dataclass
class CheckReport:
    orphaned: dict[str, list[str]] = field(default_factory=dict)  # store → object keys
    unverified: dict[str, str] = field(default_factory=dict)  # "store:key" → why: kept
    metadata_backups: list[str] = field(default_factory=list)  # "store:manifest key": kept
    stale_temporary: dict[str, list[str]] = field(default_factory=dict)  # store → keys
    missing_manifests: list[str] = field(default_factory=list)  # backup ids
    stuck: list[str] = field(default_factory=list)  # running backups without a live job
    unreachable: dict[str, str] = field(default_factory=dict)  # store → error
    removed_keys: list[str] = field(default_factory=list)  # "store:key", with fix
    not_removed: dict[str, str] = field(default_factory=dict)  # "store:key" → error

    @property
    def removed(self) -> int:
        return len(self.removed_keys)

    @property
    def clean(self) -> bool:
        return not (
            self.orphaned
            or self.unverified
            or self.stale_temporary
            or self.missing_manifests
            or self.stuck
            or self.unreachable
        )


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class ConsistencyChecker:
    _uow: UnitOfWorkFactory
    _stores: StoreCatalog
    _rules: ServiceRules
    _clock: Clock = attrs.field(factory=SystemClock)
    temporaries: TemporaryObjectSweeper = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.temporaries = TemporaryObjectSweeper(
            uow=self._uow, stores=self._stores, rules=self._rules, clock=self._clock
        )

    def run(self, *, fix: bool = False) -> CheckReport:
        report = CheckReport()
        with self._uow() as uow:
            backups = uow.backups.query(BackupQuery())
            deleting = uow.backups.in_states([BackupState.DELETING])
            live_jobs = {j.target_id for j in uow.jobs.unfinished()}
            copies = uow.copies.every()
        rows = [*backups, *deleting]
        # Copies in other stores: their containers are the service's too.
        by_id = {b.id: b for b in rows}
        copied = [at_copy(by_id[c.backup_id], c) for c in copies if c.backup_id in by_id]
        known: set[str] = {b.id for b in rows}
        # A restore_from registration refers to another backup's objects, and through its
        # manifest to that backup's parents beside it: all of them are kept. A container
        # whose registered chain cannot be read is left alone entirely.
        unreadable: set[tuple[str, str]] = set()
        for b in rows:
            if b.state is BackupState.RESTORED and b.location_ref:
                self._registered_chain(b.id, b.location_ref, known, unreadable)
        containers = containers_in_use(
            [*rows, *copied], self._stores.names(), self._rules.default_container
        )
        for store_name, names in sorted(containers.items()):
            try:
                store = self._stores.backend(store_name)
                for container in sorted(names):
                    if (store_name, container) not in unreadable:
                        for key in store.list(f"{container}/"):
                            parsed = object_layout.parse(key)
                            if parsed is not None and parsed.backup_id not in known:
                                report.orphaned.setdefault(store_name, []).append(key)
                    stale = self.temporaries.stale(store_name, container)
                    if stale:
                        report.stale_temporary.setdefault(store_name, []).extend(stale)
            except StorageError as exc:
                report.unreachable[store_name] = f"{type(exc).__name__}: {exc}"
        self._drop_backups_created_meanwhile(report)
        self._keep_unproven(report)
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
            self._fix(report)
        return report

    def _drop_backups_created_meanwhile(self, report: CheckReport) -> None:
        """A backup's row is committed before its first object is written, so reading the
        rows again after listing finds every backup whose objects the listing saw."""
        with self._uow() as uow:
            now_known = {b.id for b in uow.backups.query(BackupQuery())}
        for store_name, keys in list(report.orphaned.items()):
            left = [k for k in keys if _backup_id(k) not in now_known]
            if left:
                report.orphaned[store_name] = left
            else:
                del report.orphaned[store_name]

    def _keep_unproven(self, report: CheckReport) -> None:
        """Move out of ``orphaned`` the keys of every backup that is not provably the
        service's own tenant data: ``fix`` removes only what is left."""
        for store_name, keys in list(report.orphaned.items()):
            groups: dict[str, list[str]] = {}  # backup prefix → keys
            for key in keys:
                groups.setdefault(key.rsplit("/", 1)[0], []).append(key)
            store = self._stores.backend(store_name)
            proven: list[str] = []
            for prefix, group in groups.items():
                container, backup_id = prefix.split("/")
                opened = self._own_manifest(store, container, backup_id)
                if isinstance(opened, str):
                    for key in group:
                        report.unverified[f"{store_name}:{key}"] = opened
                    log.warning(
                        "check keeps %s:%s/ (%d objects): %s",
                        store_name,
                        prefix,
                        len(group),
                        opened,
                    )
                elif opened.manifest.project_id == SERVICE_PROJECT:
                    # As the catalog rebuild and restore_from do: no tenant's, never removed.
                    manifest = object_layout.manifest_key(container, backup_id)
                    report.metadata_backups.append(f"{store_name}:{manifest}")
                else:
                    proven.extend(group)
            if proven:
                report.orphaned[store_name] = proven
            else:
                del report.orphaned[store_name]

    def _own_manifest(
        self, store: StorageBackend, container: str, backup_id: str
    ) -> OpenedManifest | str:
        """The backup's manifest when it verifies with this service's master key at its
        own backup id's place; else why its objects cannot be proven the service's."""
        try:
            raw = store.get(object_layout.manifest_key(container, backup_id))
            return open_manifest(raw, self._stores.master_key, expected_backup_id=backup_id)
        except ObjectNotFoundError:
            return "no manifest, and chunks cannot be verified without one"
        except FormatError as exc:
            return f"its manifest does not verify with this service's master key: {exc}"
        except StorageError as exc:
            return f"its manifest cannot be read: {type(exc).__name__}: {exc}"

    def _registered_chain(
        self, backup_id: str, location: str, known: set[str], unreadable: set[tuple[str, str]]
    ) -> None:
        """Add the ids of a restore_from backup's chain to ``known``."""
        try:
            store_name, store, key = self._stores.locate(location)
        except (StorageError, ValueError) as exc:
            log.info("restore_from backup %s: location not in a store: %s", backup_id, exc)
            return
        try:
            for _ in range(MAX_CHAIN):
                parsed = object_layout.parse(key)
                if parsed is None:
                    return
                known.add(parsed.backup_id)
                manifest = open_manifest(store.get(key), self._stores.master_key).manifest
                if manifest.parent_id is None:
                    return
                key = object_layout.sibling_manifest_key(key, manifest.parent_id)
        except Exception as exc:
            log.warning("restore_from backup %s: chain not readable: %s", backup_id, exc)
            unreadable.add((store_name, object_layout.container_of(key)))

    def _fix(self, report: CheckReport) -> None:
        for store_name, keys in sorted(report.orphaned.items()):
            for key in keys:
                self._remove(report, store_name, key, temporary=False)
        for store_name, keys in sorted(report.stale_temporary.items()):
            for key in keys:
                self._remove(report, store_name, key, temporary=True)

    def _remove(self, report: CheckReport, store_name: str, key: str, *, temporary: bool) -> None:
        name = f"{store_name}:{key}"
        try:
            if temporary:
                self.temporaries.remove(store_name, key)
            else:
                self._stores.backend(store_name).delete(key)
        except StorageError as exc:
            report.not_removed[name] = f"{type(exc).__name__}: {exc}"
            return
        report.removed_keys.append(name)
        log.info("check removed %s", name)


def _backup_id(key: str) -> str | None:
    parsed = object_layout.parse(key)
    return parsed.backup_id if parsed is not None else None
