"""Asking for a check of a backup (a verification, a restore drill): the caller must see
the backup; it must be in a state the check reads; a check already running (and not stale)
is not started twice; a project asks for at most ``PER_PROJECT`` of a kind queued or running
at once; RUNNING and the job are recorded in one transaction."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import ClassVar

import attrs

from strongroom.domain.errors import (
    ConflictError,
    ResourceNotFoundError,
    UnprocessableError,
)
from strongroom.domain.model import (
    SHARED_ROUTE,
    Backup,
    BackupState,
    Drill,
    JobKind,
    RequestContext,
    Verification,
)
from strongroom.domain.ports import Clock, UnitOfWork, UnitOfWorkFactory
from strongroom.services.jobs import JobDispatcher, check_room
from strongroom.services.transfer import ChainLink, Transfer
from strongroom.services.use_case import UseCase
from strongroom.services.visibility import visible_backup

# Checks of one kind a project's requests may have queued or running at once: each reads a
# whole chain from the store (a drill restores it too) on workers every project shares.
PER_PROJECT = 1


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class BackupCheckRequests(UseCase):
    """One kind of check; subclasses say which (its rule, job, states and records)."""

    rule: ClassVar[str]  # the policy rule, e.g. "backup:verify"
    kind: ClassVar[JobKind]
    done: ClassVar[str]  # "verified", "drilled": for messages
    states: ClassVar[Collection[BackupState]]  # what the check can read

    _jobs: JobDispatcher
    _stale_after: timedelta
    _per_project: int = PER_PROJECT

    def last(self, backup: Backup) -> Verification | Drill | None:
        """The last check of this kind recorded on ``backup``."""
        raise NotImplementedError

    def running_since(self, backup: Backup) -> datetime | None:
        """When the check now RUNNING on ``backup`` started, if one is."""
        last = self.last(backup)
        return last.at if last is not None and last.status.value == "RUNNING" else None

    def record_running(self, uow: UnitOfWork, backup: Backup, now: datetime) -> None:
        raise NotImplementedError

    def request(self, ctx: RequestContext, *, backup_id: str) -> Backup:
        with self._uow() as uow:
            backup = visible_backup(uow, ctx, backup_id)
        self._authz.enforce(ctx, self.rule, backup.project_id)
        return self.start(backup_id, per_project=self._per_project)

    def start(self, backup_id: str, *, per_project: int | None = None) -> Backup:
        """Record the check and its job; with ``per_project``, refused (413) when the
        backup's project has that many of this kind queued or running (a schedule's
        verifications pass none: a schedule fires at most once a minute; its drills pass
        one, see ``DrillService.scheduled``)."""
        now = self._clock.now()
        with self._uow(write=True) as uow:
            backup = uow.backups.find_for_update(backup_id)
            if backup is None or backup.state is BackupState.DELETING:
                raise ResourceNotFoundError(backup_id)
            if backup.state not in self.states:
                raise ConflictError(
                    f"Backup {backup_id} cannot be {self.done}: its status is {backup.state}."
                )
            since = self.running_since(backup)
            if since is not None and now - since < self._stale_after:
                raise UnprocessableError(f"Backup {backup_id} is being {self.done} already.")
            if per_project is not None:
                self._check_room(uow, backup.project_id, per_project)
            self.record_running(uow, backup, now)
            job = self._jobs.record(uow, self.kind, backup_id, route=SHARED_ROUTE)
            uow.commit()
        self._jobs.submit(job)
        return backup

    def _check_room(self, uow: UnitOfWork, project_id: str, most: int) -> None:
        def project_of(backup_id: str) -> str | None:
            other = uow.backups.find(backup_id)
            return other.project_id if other is not None else None

        check_room(uow, self.kind, project_id, most, project_of=project_of, doing=self.done)


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class BackupCheckJob:
    """What the jobs of the checks share: the backup a job is for, and its chain."""

    _uow: UnitOfWorkFactory
    _clock: Clock
    _transfer: Transfer

    def _live(self, backup_id: str) -> Backup | None:
        """The backup to check; None when it is gone or being deleted (nothing to do)."""
        with self._uow() as uow:
            backup = uow.backups.find(backup_id)
        return None if backup is None or backup.state is BackupState.DELETING else backup

    def _open_chain(self, backup: Backup) -> list[ChainLink]:
        """Every manifest from the full backup to ``backup``, verified and bound."""

        def find(other_id: str) -> Backup | None:
            with self._uow() as uow:
                return uow.backups.find(other_id)

        return self._transfer.open_chain(backup, find)
