"""Backup use cases: create, register (restore_from), show, list, delete, strategies."""

from __future__ import annotations

import builtins
import logging
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import attrs

from strongroom.domain import chains, quotas, states
from strongroom.domain.errors import (
    BadRequestError,
    ForbiddenError,
    NotImplementedByDatastoreError,
    ResourceNotFoundError,
    UnprocessableError,
)
from strongroom.domain.model import (
    SHARED_ROUTE,
    Backup,
    BackupId,
    BackupState,
    BackupStrategy,
    CopyState,
    InstanceId,
    InstanceStatus,
    JobKind,
    ProjectId,
    RequestContext,
)
from strongroom.domain.ports import BackupQuery, UnitOfWork
from strongroom.services.commands import CreateBackup, RestoreFrom
from strongroom.services.datastores import DatastoreCatalog
from strongroom.services.jobs import JobDispatcher
from strongroom.services.quotas import BACKUPS, project_limit
from strongroom.services.rules import ServiceRules
from strongroom.services.stores import StoreCatalog
from strongroom.services.use_case import UseCase
from strongroom.services.visibility import sees, visible_backup, visible_instance

log = logging.getLogger(__name__)

CONTAINER_RE = re.compile(r"^[A-Za-z0-9_@%+=:,./-]*$")


def attach_copies(uow: UnitOfWork, backups: Sequence[Backup]) -> None:
    """Fill in ``copies`` of each backup (one query for the lot); DELETING ones are gone."""
    by_id = {b.id: b for b in backups}
    for backup in backups:
        backup.copies = []
    for copy in uow.copies.of_backups(list(by_id)):
        if copy.state is not CopyState.DELETING:
            by_id[copy.backup_id].copies.append(copy)


def check_container(container: str) -> None:
    """Trove's character rule, and no path: no '/' at all."""
    if not CONTAINER_RE.match(container) or "/" in container or container in (".", ".."):
        raise BadRequestError(f"The value is not allowed: {container}.")


@dataclass(frozen=True)
class Page:
    items: list[Backup]
    offset: int
    limit: int

    @property
    def full(self) -> bool:
        return len(self.items) == self.limit


@dataclass(frozen=True)
class ListFilter:
    instance_id: str | None = None
    datastore: str | None = None
    project_id: str | None = None
    all_projects: bool = False
    offset: int = 0
    limit: int | None = None


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class BackupService(UseCase):
    _catalog: DatastoreCatalog
    _stores: StoreCatalog
    _jobs: JobDispatcher
    _rules: ServiceRules

    # -- queries (read-only units of work: on PostgreSQL, no transaction around them) --
    def get(self, ctx: RequestContext, *, backup_id: str) -> Backup:
        with self._uow(read_only=True) as uow:
            backup = visible_backup(uow, ctx, backup_id, with_copies=True)
            self._authz.enforce(ctx, "backup:show", backup.project_id)
        return backup

    def list(self, ctx: RequestContext, *, filters: ListFilter) -> Page:
        self._authz.enforce(ctx, "backup:index", ctx.project_id)
        project: str | None = ctx.project_id
        if filters.project_id is not None or filters.all_projects:
            self._authz.enforce(ctx, "backup:index:all_projects", ctx.project_id)
            project = filters.project_id
        version_ids = None
        if filters.datastore is not None:
            datastore = self._catalog.get(filters.datastore)
            version_ids = [v.id for v in datastore.versions]
        limit = self._page_limit(filters.limit)
        query = BackupQuery(
            project_id=project,
            instance_id=filters.instance_id,
            datastore_version_ids=version_ids,
            offset=filters.offset,
            limit=limit,
            with_copies=True,
        )
        with self._uow(read_only=True) as uow:
            return Page(uow.backups.query(query), filters.offset, limit)

    def list_for_instance(
        self, ctx: RequestContext, *, instance_id: str, offset: int, limit: int | None
    ) -> Page:
        with self._uow(read_only=True) as uow:
            instance = visible_instance(uow, ctx, instance_id)
            self._authz.enforce(ctx, "instance:backups", instance.project_id)
            page_limit = self._page_limit(limit)
            query = BackupQuery(
                project_id=None if ctx.is_admin else ctx.project_id,
                instance_id=instance_id,
                offset=offset,
                limit=page_limit,
                with_copies=True,
            )
            return Page(uow.backups.query(query), offset, page_limit)

    def _page_limit(self, limit: int | None) -> int:
        if limit is None:
            return self._rules.page_size
        if limit <= 0 or limit > self._rules.max_page_size:
            raise BadRequestError(f"limit must be between 1 and {self._rules.max_page_size}.")
        return limit

    # -- create --------------------------------------------------------------------
    def create(
        self,
        ctx: RequestContext,
        *,
        command: CreateBackup,
        parent_page: tuple[int, int | None],
        schedule_id: str | None = None,
    ) -> Backup:
        """``parent_page`` is the
        POST's own (marker, limit), which Trove applies to the incremental parent search.
        ``schedule_id``: the schedule whose run this is."""
        self._authz.enforce(ctx, "backup:create", ctx.project_id)
        container = command.swift_container
        if container is not None:
            check_container(container)
        store_name = self._stores.resolve_name(command.storage_driver)
        if command.restore_from is not None:
            return self._register_restored(ctx, command, command.restore_from)
        instance_id = command.instance_id
        if not instance_id:
            raise BadRequestError("instance is missing.")
        if container is not None:
            self._stores.check_container(store_name, container)

        # A network round trip: done before the metadata write lock is taken.
        self._stores.check(store_name, project_id=ctx.project_id)
        now = self._clock.now()
        backup_id = BackupId(str(uuid.uuid4()))
        with self._uow(write=True) as uow:
            if container is None:
                container = self._container_for(uow, ctx, instance_id)
                check_container(container)  # strategies stored before this rule existed
                self._stores.check_container(store_name, container)
            instance = uow.instances.find_for_update(instance_id)
            if instance is None or not sees(ctx, instance.project_id):
                raise ResourceNotFoundError(instance_id)
            self._check_ready(uow, instance_id, instance.status, instance.task)
            version = self._catalog.find_version(instance.datastore_version_id)
            if version is None or version.datastore_name not in self._catalog_engines():
                name = version.datastore_name if version else "unknown"
                raise NotImplementedByDatastoreError(
                    f"The 'backup_create' operation is not supported for the '{name}' datastore."
                )
            parent_id = self._parent_for(uow, ctx, command, instance_id, parent_page)
            in_use = uow.quotas.lock_in_use(ctx.project_id, BACKUPS)
            limit = project_limit(uow.quotas, self._rules, ctx.project_id, BACKUPS)
            quotas.check_quota(resource=BACKUPS, in_use=in_use, limit=limit)
            uow.quotas.set_in_use(ctx.project_id, BACKUPS, in_use + 1)
            backup = Backup(
                id=backup_id,
                project_id=ctx.project_id,
                name=command.name,
                description=command.description,
                instance_id=InstanceId(instance_id),
                parent_id=BackupId(parent_id) if parent_id else None,
                state=BackupState.NEW,
                created=now,
                updated=now,
                datastore_version_id=instance.datastore_version_id,
                store_name=store_name,
                container=container,
                schedule_id=schedule_id,
            )
            uow.backups.add(backup)
            job = self._jobs.record(uow, JobKind.BACKUP, backup_id, route=instance.host)
            uow.commit()
        self._jobs.submit(job)
        log.info(
            "backup requested",
            extra={
                "project_id": ctx.project_id,
                "instance_id": instance_id,
                "backup_id": backup_id,
                "job_id": job.id,
            },
        )
        return backup

    def _catalog_engines(self) -> set[str]:
        return {d.name for d in self._catalog.all(include_inactive=False)}

    def _container_for(self, uow: UnitOfWork, ctx: RequestContext, instance_id: str) -> str:
        for key in (instance_id, ""):
            strategy = uow.strategies.find(ctx.project_id, key)
            if strategy is not None:
                return strategy.swift_container
        return self._rules.default_container

    @staticmethod
    def _check_ready(
        uow: UnitOfWork, instance_id: str, status: InstanceStatus, task: str | None
    ) -> None:
        prefix = f"Instance {instance_id} is not currently available for an action to be performed"
        if task is not None:
            raise UnprocessableError(f"{prefix} (task status was {task}).")
        if status is not InstanceStatus.ACTIVE:
            raise UnprocessableError(f"{prefix} (instance status was {status}).")
        if uow.backups.running_for_instance(instance_id):
            raise UnprocessableError(f"{prefix} (instance status was BACKUP).")

    def _parent_for(
        self,
        uow: UnitOfWork,
        ctx: RequestContext,
        command: CreateBackup,
        instance_id: str,
        parent_page: tuple[int, int | None],
    ) -> str | None:
        explicit = command.parent_id
        if explicit:
            parent = visible_backup(uow, ctx, explicit)
            # Stricter than Trove: an incremental needs a finished base of the same instance,
            # otherwise the backup could only fail later.
            if parent.state is not BackupState.COMPLETED or parent.instance_id != instance_id:
                raise BadRequestError(
                    f"Backup {explicit} cannot be the parent: it must be a COMPLETED "
                    f"backup of instance {instance_id}."
                )
            return parent.id
        if not command.incremental:
            return None
        offset, limit = parent_page
        candidates = uow.backups.query(
            BackupQuery(
                project_id=None if ctx.is_admin else ctx.project_id,
                instance_id=instance_id,
                offset=offset,
                limit=limit or self._rules.page_size,
            )
        )
        chosen = chains.choose_parent(candidates)
        return chosen.id if chosen else None

    def _register_restored(
        self, ctx: RequestContext, command: CreateBackup, source: RestoreFrom
    ) -> Backup:
        version = self._catalog.version_by_id(source.local_datastore_version_id)
        location = source.remote_location
        # A tenant registers only its own project's backups: the master key opens every
        # project's manifest, so the manifest's project is checked (admins may import any).
        manifest = self._stores.read_manifest_at(
            location, project_id=None if ctx.is_admin else ctx.project_id
        )
        if manifest is None:
            raise BadRequestError(f"Failed to restore backup from {location}")
        now = self._clock.now()
        with self._uow(write=True) as uow:
            in_use = uow.quotas.lock_in_use(ctx.project_id, BACKUPS)
            limit = project_limit(uow.quotas, self._rules, ctx.project_id, BACKUPS)
            quotas.check_quota(resource=BACKUPS, in_use=in_use, limit=limit)
            uow.quotas.set_in_use(ctx.project_id, BACKUPS, in_use + 1)
            backup = Backup(
                id=BackupId(str(uuid.uuid4())),
                project_id=ctx.project_id,
                name=command.name,
                description=command.description,
                instance_id=None,
                parent_id=None,
                state=BackupState.RESTORED,
                created=now,
                updated=now,
                datastore_version_id=version.id,
                size_gb=float(source.size),
                location_ref=location,
                store_name=manifest.store_name,
                container=manifest.container,
                manifest_sha256=manifest.sha256,
            )
            uow.backups.add(backup)
            uow.commit()
        log.info(
            "backup registered from a stored manifest (restore_from)",
            extra={"project_id": ctx.project_id, "backup_id": backup.id},
        )
        return backup

    # -- delete --------------------------------------------------------------------
    def delete(self, ctx: RequestContext, *, backup_id: str) -> None:
        with self._uow() as uow:
            target = visible_backup(uow, ctx, backup_id)
        if target.state is not BackupState.RESTORED and target.store_name:
            self._stores.check(target.store_name, project_id=ctx.project_id)
        now = self._clock.now()
        with self._uow(write=True) as uow:
            root = visible_backup(uow, ctx, backup_id)
            self._authz.enforce(ctx, "backup:delete", root.project_id)
            family = self._family(uow, ctx, root)
            plan = chains.plan_delete(
                root, family, now=now, running_expires=self._rules.running_backups_expire
            )
            # Usage goes back to each backup's own project (an admin may delete another
            # project's), once: a backup whose delete failed gave its share back then.
            released = Counter(
                b.project_id for b in plan if b.state is not BackupState.DELETE_FAILED
            )
            jobs = []
            for backup in plan:
                keep_objects = backup.state is BackupState.RESTORED
                states.transition(backup, BackupState.DELETING, now)
                uow.backups.save(backup)
                jobs.append(
                    self._jobs.record(
                        uow,
                        JobKind.DELETE_BACKUP,
                        backup.id,
                        {"keep_objects": keep_objects},
                        route=SHARED_ROUTE,
                    )
                )
            for project_id in sorted(released):  # one lock order for every deleter
                in_use = uow.quotas.lock_in_use(project_id, BACKUPS)
                left = quotas.release(in_use, released[project_id])
                uow.quotas.set_in_use(project_id, BACKUPS, left)
            uow.commit()
        for backup in plan:
            log.info(
                "backup deletion requested",
                extra={"project_id": backup.project_id, "backup_id": backup.id},
            )
        for job in jobs:
            self._jobs.submit(job)

    @staticmethod
    def _family(uow: UnitOfWork, ctx: RequestContext, root: Backup) -> builtins.list[Backup]:
        """Every live descendant of ``root`` that the caller can see."""
        found: list[Backup] = []
        frontier = [root.id]
        while frontier:
            children = [
                c
                for c in uow.backups.children(frontier.pop())
                if c.state is not BackupState.DELETING and sees(ctx, c.project_id)
            ]
            found.extend(children)
            frontier.extend(c.id for c in children)
        return found

    # -- strategies ----------------------------------------------------------------
    def create_strategy(
        self, ctx: RequestContext, *, instance_id: str | None, container: str
    ) -> BackupStrategy:
        self._authz.enforce(ctx, "backup_strategy:create", ctx.project_id)
        check_container(container)  # stricter than Trove: a container is never a path
        # Backups without a storage_driver go to the default store: its naming rule.
        self._stores.check_container(self._stores.default_name, container)
        strategy = BackupStrategy(ctx.project_id, instance_id or "", container)
        with self._uow(write=True) as uow:
            uow.strategies.upsert(strategy)
            uow.commit()
        return strategy

    def list_strategies(
        self, ctx: RequestContext, *, instance_id: str | None, project_id: str | None
    ) -> builtins.list[BackupStrategy]:
        project = self._strategy_project(ctx, project_id, "backup_strategy:index")
        with self._uow() as uow:
            return uow.strategies.list(project, instance_id)

    def delete_strategy(
        self, ctx: RequestContext, *, instance_id: str | None, project_id: str | None
    ) -> None:
        project = self._strategy_project(ctx, project_id, "backup_strategy:delete")
        with self._uow(write=True) as uow:
            uow.strategies.remove(project, instance_id or "")
            uow.commit()

    def _strategy_project(
        self, ctx: RequestContext, project_id: str | None, rule: str
    ) -> ProjectId:
        self._authz.enforce(ctx, rule, ctx.project_id)
        if project_id is not None and project_id != ctx.project_id and not ctx.is_admin:
            raise ForbiddenError(f"Operation not allowed for tenant {ctx.project_id}.")
        return ProjectId(project_id or ctx.project_id)
