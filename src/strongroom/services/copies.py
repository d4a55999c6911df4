"""Copies of backups in a second store: ask for one, see them, drop them.

``POST /backups/{id}/copy`` copies the backup *and its chain*: an incremental is useless
without its parents, so each link without a copy in that store gets one, parents first,
in one job. A backup has at most one copy per store; a copy never outlives its backup
(deleting a backup deletes its copies). See ``copy_jobs`` for the work itself."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime

import attrs

from strongroom.domain.errors import (
    BadRequestError,
    ConflictError,
    ResourceNotFoundError,
    UnprocessableError,
)
from strongroom.domain.model import (
    SHARED_ROUTE,
    Backup,
    BackupCopy,
    BackupId,
    BackupState,
    CopyState,
    JobKind,
    RequestContext,
)
from strongroom.domain.ports import UnitOfWork
from strongroom.services.backups import attach_copies, check_container
from strongroom.services.copy_objects import CopyWriter
from strongroom.services.jobs import JobDispatcher, check_room
from strongroom.services.stores import StoreCatalog
from strongroom.services.use_case import UseCase
from strongroom.services.visibility import visible_backup

log = logging.getLogger(__name__)

MAX_CHAIN = 10_000
# Copies a project's requests may have queued or running at once: each reads a chain,
# writes it to another store and reads it back, on workers every project shares. A
# schedule's copies are not refused (a schedule fires at most once a minute), and count.
PER_PROJECT = 2


def chain_of(uow: UnitOfWork, backup: Backup) -> list[Backup]:
    """``backup`` and its parents, the full backup first."""
    chain = [backup]
    while chain[-1].parent_id is not None:
        parent = uow.backups.find(chain[-1].parent_id)
        if parent is None or len(chain) > MAX_CHAIN:
            raise UnprocessableError(
                f"Backup {backup.id} cannot be copied: its parent {chain[-1].parent_id} "
                "is no longer available."
            )
        chain.append(parent)
    chain.reverse()
    return chain


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class CopyService(UseCase):
    _stores: StoreCatalog
    _writer: CopyWriter
    _jobs: JobDispatcher

    def request(
        self,
        ctx: RequestContext,
        *,
        backup_id: str,
        spec: dict[str, object],
        per_project: int | None = PER_PROJECT,
    ) -> Backup:
        """``spec`` is the schema-validated ``copy`` object; ``per_project``: see
        :meth:`start`."""
        with self._uow() as uow:
            backup = visible_backup(uow, ctx, backup_id)
        self._authz.enforce(ctx, "backup:copy", backup.project_id)
        store_name = self._stores.resolve_name(spec.get("storage_driver"))
        container = spec.get("swift_container") or self._chain_container(backup, store_name)
        if not isinstance(container, str):
            raise BadRequestError("swift_container is missing.")
        check_container(container)
        self._stores.check_container(store_name, container)
        if store_name == backup.store_name:
            raise BadRequestError(
                f"Backup {backup_id} is stored in {store_name!r} already: a copy goes to "
                "another store."
            )
        if backup.state is not BackupState.COMPLETED:
            raise ConflictError(
                f"Backup {backup_id} cannot be copied: its status is {backup.state}."
            )
        # A network round trip (and Swift's URL needs its token): checked before the URL.
        self._stores.check(store_name, project_id=ctx.project_id)
        if self._writer.destination_url(backup, store_name, container) == backup.location_ref:
            raise BadRequestError(
                f"Store {store_name!r} is where backup {backup_id} is stored already."
            )
        return self.start(backup_id, store_name, container, per_project=per_project)

    def _chain_container(self, backup: Backup, store_name: str) -> str | None:
        """Where a copy goes when the request does not say: beside the copies of its
        parents in that store, else the container of the backup itself."""
        with self._uow() as uow:
            for link in reversed(chain_of(uow, backup)):
                existing = uow.copies.in_store(link.id, store_name)
                if existing is not None and existing.state is not CopyState.FAILED:
                    return existing.container
        return backup.container

    def start(
        self, backup_id: str, store_name: str, container: str, *, per_project: int | None = None
    ) -> Backup:
        """Record a COPYING copy of each link of the chain that has none in the store, and
        one job for them all, in one transaction; with ``per_project``, refused (413) when
        the backup's project has that many copy jobs queued or running."""
        now = self._clock.now()
        with self._uow(write=True) as uow:
            backup = uow.backups.find_for_update(backup_id)
            if backup is None or backup.state is BackupState.DELETING:
                raise ResourceNotFoundError(backup_id)
            if backup.state is not BackupState.COMPLETED:
                raise ConflictError(
                    f"Backup {backup_id} cannot be copied: its status is {backup.state}."
                )
            own = uow.copies.in_store(backup_id, store_name)
            if own is not None and own.state is not CopyState.FAILED:
                raise UnprocessableError(
                    f"Backup {backup_id} has a copy in store {store_name!r} already "
                    f"(its state is {own.state})."
                )
            if per_project is not None:
                self._check_room(uow, backup.project_id, per_project)
            chain_ids: list[str] = []
            for link in chain_of(uow, backup):
                if link.state is not BackupState.COMPLETED:
                    raise ConflictError(
                        f"Backup {backup_id} cannot be copied: its parent {link.id} has "
                        f"status {link.state}."
                    )
                chain_ids.append(self._copy_row(uow, link, store_name, container, now).id)
            job = self._jobs.record(
                uow, JobKind.COPY_BACKUP, chain_ids[-1], {"chain": chain_ids}, route=SHARED_ROUTE
            )
            attach_copies(uow, [backup])
            uow.commit()
        self._jobs.submit(job)
        log.info(
            "backup copy requested to store %s",
            store_name,
            extra={"project_id": backup.project_id, "backup_id": backup.id, "job_id": job.id},
        )
        return backup

    @staticmethod
    def _check_room(uow: UnitOfWork, project_id: str, most: int) -> None:
        def project_of(copy_id: str) -> str | None:
            copy = uow.copies.find(copy_id)
            return copy.project_id if copy is not None else None

        check_room(
            uow, JobKind.COPY_BACKUP, project_id, most, project_of=project_of, doing="copied"
        )

    @staticmethod
    def _copy_row(
        uow: UnitOfWork, link: Backup, store_name: str, container: str, now: datetime
    ) -> BackupCopy:
        """The link's copy in the store: kept if it is there or on its way, started
        again if it failed, new otherwise."""
        existing = uow.copies.in_store(link.id, store_name)
        if existing is not None and existing.state in (CopyState.COMPLETED, CopyState.COPYING):
            # A chain sits in one container, in a copy's store as in its own (format §1).
            if existing.container != container:
                raise BadRequestError(
                    f"Backup {link.id} of this chain is copied to container "
                    f"{existing.container!r} of store {store_name!r}: the chain's copies go "
                    "to that container."
                )
            return existing
        if existing is not None and existing.state is CopyState.DELETING:
            raise UnprocessableError(
                f"The copy of backup {link.id} in store {store_name!r} is being deleted."
            )
        if existing is not None:
            existing.state = CopyState.COPYING
            existing.container = container
            existing.error = None
            existing.location_ref = None
            existing.verified_at = None
            existing.updated = now
            uow.copies.save(existing)
            return existing
        copy = BackupCopy(
            id=str(uuid.uuid4()),
            backup_id=BackupId(link.id),
            project_id=link.project_id,
            store_name=store_name,
            container=container,
            state=CopyState.COPYING,
            created=now,
            updated=now,
        )
        uow.copies.add(copy)
        return copy

    def drop(self, copy_ids: Sequence[str]) -> None:
        """Mark copies DELETING and queue the removal of each (retention in the copy's
        store); their backups stay."""
        now = self._clock.now()
        jobs = []
        with self._uow(write=True) as uow:
            for copy_id in copy_ids:
                copy = uow.copies.find(copy_id)
                if copy is None or copy.state is CopyState.DELETING:
                    continue
                copy.state = CopyState.DELETING
                copy.updated = now
                uow.copies.save(copy)
                jobs.append(
                    self._jobs.record(uow, JobKind.DELETE_COPY, copy.id, route=SHARED_ROUTE)
                )
            uow.commit()
        for job in jobs:
            self._jobs.submit(job)
