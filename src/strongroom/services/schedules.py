"""Backup schedules: define them, run one now, prune by retention.

A scheduled run is an ordinary backup: it goes through ``BackupService.create`` with the
schedule's project, and through ``BackupService.delete`` when retention drops it."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import attrs

from strongroom.domain import retention
from strongroom.domain.errors import (
    BadRequestError,
    DomainError,
    OverLimitError,
    ResourceNotFoundError,
)
from strongroom.domain.model import (
    Backup,
    BackupId,
    BackupState,
    CopyState,
    InstanceId,
    RequestContext,
)
from strongroom.domain.ports import UnitOfWork
from strongroom.domain.schedules import RetentionPolicy, RunStatus, Schedule, ScheduleId
from strongroom.services import cron
from strongroom.services.backups import BackupService, check_container
from strongroom.services.commands import CreateBackup
from strongroom.services.copies import CopyService
from strongroom.services.failure import describe_failure
from strongroom.services.stores import StoreCatalog
from strongroom.services.use_case import UseCase
from strongroom.services.visibility import sees

log = logging.getLogger(__name__)

MAX_FULL_EVERY = 1000
# A project's schedules (the default of `max_schedules`): each a backup (and a verification) a run.
MAX_SCHEDULES = 100
# The usage row locked while a project's schedules are counted (as backups' quota is), so
# two creates cannot both take the last place.
SCHEDULES_LOCK = "backup_schedules"
# How copy retention sees a copy: as a backup in the state its copy is in.
COPY_AS_BACKUP = {
    CopyState.COPYING: BackupState.NEW,
    CopyState.COMPLETED: BackupState.COMPLETED,
    CopyState.FAILED: BackupState.FAILED,
}


@dataclass(frozen=True)
class PruneResult:
    plan: retention.RetentionPlan
    errors: dict[str, str]  # backup id → why it could not be deleted


def _run_roles(ctx: RequestContext) -> tuple[str, ...]:
    """The roles a scheduled run keeps of its author: never ``admin``, which would let a
    run reach beyond its project."""
    return tuple(r for r in ctx.roles if r.lower() != "admin")


def schedule_context(schedule: Schedule) -> RequestContext:
    """Whom a scheduled run acts as: the schedule's creator, within its project."""
    return RequestContext(schedule.project_id, schedule.user_id or "scheduler", schedule.roles)


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class ScheduleService(UseCase):
    _backups: BackupService
    _stores: StoreCatalog
    _copies: CopyService | None = None
    _max_schedules: int = MAX_SCHEDULES  # per project
    _min_interval: int = cron.MIN_INTERVAL  # seconds between a schedule's runs

    # -- definitions ---------------------------------------------------------------
    def create(self, ctx: RequestContext, *, spec: dict[str, Any]) -> Schedule:
        """``spec`` is the schema-validated ``backup_schedule`` object."""
        self._authz.enforce(ctx, "backup_schedule:create", ctx.project_id)
        now = self._clock.now()
        schedule = self._parse(
            ctx,
            spec,
            Schedule(
                id=ScheduleId(str(uuid.uuid4())),
                project_id=ctx.project_id,
                instance_id=InstanceId(""),
                name="",
                cron="",
                timezone="UTC",
                created=now,
                updated=now,
                next_run_at=now,
                user_id=ctx.user_id,
                roles=_run_roles(ctx),
            ),
        )
        with self._uow(write=True) as uow:
            self._check_instance(uow, schedule)
            self._check_room(uow, schedule.project_id)
            uow.schedules.add(schedule)
            uow.commit()
        return schedule

    def replace(self, ctx: RequestContext, *, schedule_id: str, spec: dict[str, Any]) -> Schedule:
        with self._uow(write=True) as uow:
            current = self._visible(uow, ctx, schedule_id)
            self._authz.enforce(ctx, "backup_schedule:update", current.project_id)
            base = replace(current, updated=self._clock.now())
            if ctx.project_id == current.project_id:
                # Runs act as whoever last set what they do, with that member's roles: an
                # editor cannot lend itself the creator's. An admin of another project
                # leaves the project's member in place.
                base = replace(base, user_id=ctx.user_id, roles=_run_roles(ctx))
            schedule = self._parse(ctx, spec, base)
            self._check_instance(uow, schedule)
            uow.schedules.replace(schedule)
            uow.commit()
        return schedule

    def _parse(self, ctx: RequestContext, spec: dict[str, Any], base: Schedule) -> Schedule:
        expression = cron.check_cron(spec["cron"], min_interval=self._min_interval)
        zone_name = spec.get("timezone", "UTC")
        cron.zone(zone_name)
        drill = spec.get("drill_cron")
        if drill is not None:
            drill = cron.check_cron(drill, "drill_cron", min_interval=self._min_interval)
        container = spec.get("swift_container")
        if container is not None:
            check_container(container)
            self._stores.check_allowed(container)
        driver = spec.get("storage_driver")
        if driver is not None:
            driver = self._stores.resolve_name(driver)
        full_every = spec.get("full_every", 7)
        if not 1 <= full_every <= MAX_FULL_EVERY:
            raise BadRequestError(f"full_every must be between 1 and {MAX_FULL_EVERY}.")
        copy_to = self._copy_to(spec.get("copy_to"), driver or self._stores.default_name)
        if spec.get("copy_retention") is not None and copy_to is None:
            raise BadRequestError("copy_retention needs copy_to.")
        now = self._clock.now()
        return replace(
            base,
            copy_to=copy_to,
            copy_retention=RetentionPolicy.parse(spec.get("copy_retention")),
            instance_id=InstanceId(spec["instance_id"]),
            name=spec["name"],
            cron=expression,
            timezone=zone_name,
            incremental=bool(spec.get("incremental", False)),
            full_every=full_every,
            storage_driver=driver,
            swift_container=container,
            retention=RetentionPolicy.parse(spec.get("retention")),
            verify=bool(spec.get("verify", False)),
            drill_cron=drill,
            next_run_at=cron.next_after(expression, zone_name, now),
            next_drill_at=cron.next_after(drill, zone_name, now) if drill else None,
        )

    def _copy_to(self, spec: Any, primary: str) -> dict[str, str] | None:
        """Where each backup of the schedule is copied: another store than its own."""
        if spec is None:
            return None
        name = self._stores.resolve_name(spec.get("storage_driver"))
        if name == primary:
            raise BadRequestError(
                f"copy_to must name another store than the schedule's backups go to ({name!r})."
            )
        target = {"storage_driver": name}
        container = spec.get("swift_container")
        if container is not None:
            check_container(container)
            self._stores.check_container(name, container)
            target["swift_container"] = container
        return target

    def _check_room(self, uow: UnitOfWork, project_id: str) -> None:
        uow.quotas.lock_in_use(project_id, SCHEDULES_LOCK)
        count = len(uow.schedules.list(project_id, None))
        if count >= self._max_schedules:
            raise OverLimitError(
                f"Project {project_id} has {count} backup schedules; a project may have at "
                f"most {self._max_schedules}: delete one before creating another."
            )

    @staticmethod
    def _check_instance(uow: UnitOfWork, schedule: Schedule) -> None:
        instance = uow.instances.find(schedule.instance_id)
        if instance is None or instance.project_id != schedule.project_id:
            raise BadRequestError(f"Instance {schedule.instance_id} cannot be found.")

    def get(self, ctx: RequestContext, *, schedule_id: str) -> Schedule:
        with self._uow() as uow:
            schedule = self._visible(uow, ctx, schedule_id)
        self._authz.enforce(ctx, "backup_schedule:show", schedule.project_id)
        return schedule

    def delete(self, ctx: RequestContext, *, schedule_id: str) -> None:
        """The schedule goes; its backups stay (they are ordinary backups)."""
        with self._uow(write=True) as uow:
            schedule = self._visible(uow, ctx, schedule_id)
            self._authz.enforce(ctx, "backup_schedule:delete", schedule.project_id)
            uow.schedules.remove(schedule.id)
            uow.commit()

    @staticmethod
    def _visible(uow: UnitOfWork, ctx: RequestContext, schedule_id: str) -> Schedule:
        schedule = uow.schedules.find(schedule_id)
        if schedule is None or not sees(ctx, schedule.project_id):
            raise ResourceNotFoundError(schedule_id)
        return schedule

    # -- runs ------------------------------------------------------------------------
    def run_now(self, ctx: RequestContext, *, schedule_id: str) -> Backup:
        """A run outside the timetable; a refusal (busy, quota) is the caller's answer
        and is recorded on the schedule too."""
        schedule = self.get(ctx, schedule_id=schedule_id)
        self._authz.enforce(ctx, "backup_schedule:run", schedule.project_id)
        backup = self.start_run(schedule, raise_refusal=True)
        assert backup is not None
        return backup

    def start_run(self, schedule: Schedule, *, raise_refusal: bool = False) -> Backup | None:
        """Create this run's backup and record the outcome on the schedule; None when the
        backup could not be created (the reason is in ``last_error``; no retry: the next
        tick is the next chance)."""
        now = self._clock.now()
        try:
            with self._uow() as uow:
                parent_id = self._parent_for(uow, schedule)
            command = CreateBackup(
                name=f"{schedule.name[:230]}-{now:%Y%m%dT%H%M%SZ}",
                description=f"scheduled by backup schedule {schedule.id}",
                instance_id=schedule.instance_id,
                parent_id=parent_id,
                swift_container=schedule.swift_container,
                storage_driver=schedule.storage_driver,
            )
            backup = self._backups.create(
                schedule_context(schedule),
                command=command,
                parent_page=(0, None),
                schedule_id=schedule.id,
            )
        except DomainError as exc:
            log.warning("scheduled run of %s could not start: %s", schedule.id, exc)
            self._record(schedule, now, None, RunStatus.SKIPPED, describe_failure(exc))
            if raise_refusal:
                raise
            return None
        self._record(schedule, now, backup.id, RunStatus.STARTED, None)
        return backup

    def _record(
        self,
        schedule: Schedule,
        at: datetime,
        backup_id: str | None,
        status: RunStatus,
        error: str | None,
    ) -> None:
        with self._uow(write=True) as uow:
            uow.schedules.record_run(
                schedule.id, at=at, backup_id=backup_id, status=status, error=error
            )
            uow.commit()

    @staticmethod
    def _parent_for(uow: UnitOfWork, schedule: Schedule) -> str | None:
        """Full for the first run and every ``full_every``-th after it; otherwise the
        schedule's previous backup, if it completed (a broken chain starts a new full).
        Only backups of the instance it backs up now count: a schedule moved to another
        instance starts that one's chain with a full."""
        if not schedule.incremental or schedule.full_every <= 1:
            return None
        mine = {
            b.id: b
            for b in uow.schedules.backups_of(schedule.id)
            if b.instance_id == schedule.instance_id
        }
        live = [b for b in mine.values() if b.state is not BackupState.DELETING]
        if not live:
            return None
        previous = max(live, key=lambda b: b.created)
        if previous.state is not BackupState.COMPLETED:
            return None
        length, link = 1, previous
        while link.parent_id is not None:
            parent = mine.get(link.parent_id)
            if parent is None:
                return None  # chained outside the schedule: start the schedule's own
            length, link = length + 1, parent
        return previous.id if length < schedule.full_every else None

    # -- retention -------------------------------------------------------------------
    def prune(self, ctx: RequestContext, *, schedule_id: str, dry_run: bool) -> PruneResult:
        schedule = self.get(ctx, schedule_id=schedule_id)
        self._authz.enforce(ctx, "backup_schedule:prune", schedule.project_id)
        return self.apply_retention(schedule, ctx, dry_run=dry_run)

    def plan(self, schedule: Schedule) -> retention.RetentionPlan:
        with self._uow() as uow:
            mine = uow.schedules.backups_of(schedule.id)
            ids = {b.id for b in mine}
            dependents: dict[str, str] = {}
            for backup in mine:
                for child in uow.backups.children(backup.id):
                    if child.id not in ids and child.state is not BackupState.DELETING:
                        dependents[backup.id] = child.id
        return retention.plan_retention(
            mine,
            schedule.retention,
            zone=cron.zone(schedule.timezone),
            now=self._clock.now(),
            dependents=dependents,
        )

    def apply_retention(
        self, schedule: Schedule, ctx: RequestContext | None = None, *, dry_run: bool = False
    ) -> PruneResult:
        plan = self.plan(schedule)
        errors: dict[str, str] = {}
        if not dry_run:
            actor = ctx or schedule_context(schedule)
            # Newest first: children go before the backups they are built on.
            for decision in plan.delete:
                try:
                    self._backups.delete(actor, backup_id=decision.backup_id)
                except ResourceNotFoundError:
                    continue  # already deleted
                except DomainError as exc:
                    errors[decision.backup_id] = describe_failure(exc)
                    log.warning("retention could not delete %s: %s", decision.backup_id, exc)
        return PruneResult(plan, errors)

    # -- copies in the copy_to store ------------------------------------------------------
    def copy_run(self, schedule: Schedule, backup_id: str) -> None:
        """Copy a finished run's backup (and what of its chain is not there yet)."""
        if schedule.copy_to is None or self._copies is None:
            return
        self._copies.request(
            schedule_context(schedule),
            backup_id=backup_id,
            spec=dict(schedule.copy_to),
            per_project=None,
        )

    def apply_copy_retention(self, schedule: Schedule) -> retention.RetentionPlan | None:
        """``copy_retention`` over the schedule's copies in its ``copy_to`` store (a copy
        in COPYING counts as running, a FAILED one as failed); the copies it drops are
        deleted there, their backups stay. No policy keeps every copy."""
        if schedule.copy_to is None or self._copies is None:
            return None
        store = schedule.copy_to["storage_driver"]
        with self._uow() as uow:
            mine = uow.schedules.backups_of(schedule.id)
            copies = {
                c.backup_id: c
                for c in uow.copies.of_backups([b.id for b in mine])
                if c.store_name == store and c.state is not CopyState.DELETING
            }
        as_copies = [
            replace(b, state=COPY_AS_BACKUP[copies[b.id].state])
            for b in mine
            if b.id in copies and b.state is not BackupState.DELETING  # going with its copies
        ]
        plan = retention.plan_retention(
            as_copies,
            schedule.copy_retention,
            zone=cron.zone(schedule.timezone),
            now=self._clock.now(),
        )
        self._copies.drop([copies[BackupId(d.backup_id)].id for d in plan.delete])
        return plan

    # Last: below it, ``list`` in annotations would name this method.
    def list(self, ctx: RequestContext, *, instance_id: str | None) -> list[Schedule]:
        self._authz.enforce(ctx, "backup_schedule:index", ctx.project_id)
        with self._uow() as uow:
            return uow.schedules.list(ctx.project_id, instance_id)
