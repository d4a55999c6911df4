"""Point-in-time restore at the API: an instance's archiving policy (``PUT``/``GET
/instances/{id}/pitr``), its restorable window and archiving status for the instance
view, and the check of a ``restorePoint`` with a ``restoreTime``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import attrs

from strongroom.domain.errors import BadRequestError, ResourceNotFoundError
from strongroom.domain.model import BackupState, Instance, InstanceKind, RequestContext
from strongroom.domain.pitr import ArchiveSummary, PitrPolicy
from strongroom.domain.ports import BackupQuery, UnitOfWork
from strongroom.services import pitr
from strongroom.services.datastores import DatastoreCatalog
from strongroom.services.rules import ServiceRules
from strongroom.services.stores import StoreCatalog
from strongroom.services.use_case import UseCase
from strongroom.services.visibility import sees, visible_instance

ARCHIVING_DATASTORES = ("postgresql", "mariadb")
# Datastores whose archiving needs a server the service manages: an external MariaDB
# server's binary log would need REPLICATION SLAVE there and could be purged under it.
MANAGED_ONLY_DATASTORES = ("mariadb",)


@dataclass(frozen=True)
class PitrStatus:
    """What the instance view shows: the policy, the window and how far behind."""

    enabled: bool
    last_archived_at: datetime | None
    lag_seconds: float | None
    window: tuple[pitr.Span, ...]
    storage_driver: str | None = None


def window_of(
    uow: UnitOfWork, instance: Instance, summary: ArchiveSummary | None = None
) -> tuple[list[pitr.Span], list[pitr.BackupPoint]]:
    """``summary``: the instance's archive, when the caller has read it already."""
    if summary is None:
        summary = uow.pitr.archive_summary(instance.id)
    runs = [pitr.Span(r.archived_from, r.archived_through) for r in summary.runs]
    backups = uow.backups.query(
        BackupQuery(instance_id=instance.id, states=(BackupState.COMPLETED,))
    )
    # A backup restores to a time only if archiving had begun when it started (its WAL
    # joins the archive) and it finished inside the same run.
    points = [
        pitr.BackupPoint(b.id, b.updated)
        for b in backups
        if any(r.start <= b.created and b.updated <= r.end for r in runs)
    ]
    return pitr.restorable_window(points, runs), points


def status_of(uow: UnitOfWork, instance: Instance, now: datetime) -> PitrStatus:
    policy = uow.pitr.policy(instance.id)
    summary = uow.pitr.archive_summary(instance.id)
    window, _ = window_of(uow, instance, summary)
    last = summary.last_archived
    enabled = bool(policy and policy.enabled)
    lag = (now - last).total_seconds() if enabled and last else None
    return PitrStatus(
        enabled,
        last,
        round(max(lag, 0.0), 3) if lag is not None else None,
        tuple(window),
        policy.store_name if policy else None,
    )


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class PitrService(UseCase):
    _catalog: DatastoreCatalog
    _stores: StoreCatalog
    _rules: ServiceRules

    def show(self, ctx: RequestContext, *, instance_id: str) -> PitrStatus:
        with self._uow() as uow:
            instance = visible_instance(uow, ctx, instance_id)
            self._authz.enforce(ctx, "instance:pitr:show", instance.project_id)
            return self.status(uow, instance)

    def update(self, ctx: RequestContext, *, instance_id: str, body: Any) -> PitrStatus:
        request = body.get("pitr") if isinstance(body, dict) else None
        if not isinstance(request, dict) or set(request) - {"enabled", "storage_driver"}:
            raise BadRequestError(
                'The request body must be {"pitr": {"enabled": true|false, '
                '"storage_driver": "<store>"}}.'
            )
        enabled = request.get("enabled")
        if not isinstance(enabled, bool):
            raise BadRequestError("pitr.enabled must be true or false.")
        with self._uow(write=True) as uow:
            instance = visible_instance(uow, ctx, instance_id)
            self._authz.enforce(ctx, "instance:pitr:update", instance.project_id)
            version = self._catalog.find_version(instance.datastore_version_id)
            datastore = version.datastore_name if version else "unknown"
            if enabled and datastore not in ARCHIVING_DATASTORES:
                raise BadRequestError(
                    f"Point-in-time archiving is not available for datastore {datastore}."
                )
            if (
                enabled
                and datastore in MANAGED_ONLY_DATASTORES
                and instance.kind == InstanceKind.EXTERNAL
            ):
                raise BadRequestError(
                    f"Point-in-time archiving is available for managed {datastore} "
                    "instances only, not for registered (external) servers."
                )
            if instance.task == "DELETING":
                raise ResourceNotFoundError(instance_id)
            policy = uow.pitr.policy(instance.id)
            now = self._clock.now()
            if policy is None:
                if not enabled:
                    return self.status(uow, instance)
                store_name = self._stores.resolve_name(request.get("storage_driver"))
                policy = PitrPolicy(
                    instance.id,
                    instance.project_id,
                    True,
                    store_name,
                    self._rules.default_container,
                    now,
                )
            else:
                if "storage_driver" in request and enabled:
                    store_name = self._stores.resolve_name(request.get("storage_driver"))
                    if store_name != policy.store_name and policy.next_start is not None:
                        raise BadRequestError(
                            "Archiving is running into another store; disable it first."
                        )
                    policy.store_name = store_name
                policy.enabled = enabled
                policy.updated = now
            uow.pitr.save_policy(policy)
            uow.commit()
            return self.status(uow, instance)

    def status(self, uow: UnitOfWork, instance: Instance) -> PitrStatus:
        return status_of(uow, instance, self._clock.now())


def restore_base(
    uow: UnitOfWork, ctx: RequestContext, restore_point: dict[str, Any]
) -> tuple[str, str, datetime]:
    """``(backup id, source instance id, target time)`` of a ``restorePoint`` with a
    ``restoreTime``: the named backup, or the newest one at or before the time in the
    same unbroken run of the source instance's archive. 400 with the window's ranges for
    a time it does not cover; 404 for what the project cannot see."""
    when = pitr.parse_restore_time(restore_point.get("restoreTime"))  # type: ignore[arg-type]
    backup_id = restore_point.get("backupRef")
    if backup_id is not None:
        backup = uow.backups.find(str(backup_id))
        if backup is None or not sees(ctx, backup.project_id):
            raise ResourceNotFoundError(str(backup_id))
        source_id = backup.instance_id or ""
    else:
        source_id = str(restore_point.get("instanceRef") or "")
    source = visible_instance(uow, ctx, source_id)
    window, points = window_of(uow, source)
    if backup_id is not None:
        point = next((p for p in points if p.backup_id == backup_id), None)
        if point is None:
            raise pitr.OutsideWindowError(when, window)
        pitr.check_backup_reaches(point, when, window)
        return str(backup_id), source.id, when
    return pitr.base_backup_for(when, points, window).backup_id, source.id, when
